//! The bounded table of open file handles behind `Storage`: at most `cap` open at once,
//! least recently used closed first. Closing only drops our reference; an operation still
//! in flight keeps its handle alive until it completes.

use std::rc::Rc;
use tokio_uring::fs::File;

pub struct OpenFiles {
    handles: Vec<Option<Rc<File>>>,
    last_used: Vec<u64>,
    clock: u64,
    open: usize,
    cap: usize,
}

impl OpenFiles {
    pub fn new(files: usize, cap: usize) -> OpenFiles {
        OpenFiles {
            handles: vec![None; files],
            last_used: vec![0; files],
            clock: 0,
            open: 0,
            cap: cap.max(1),
        }
    }

    pub fn get(&mut self, file: usize) -> Option<Rc<File>> {
        let h = self.handles[file].clone()?;
        self.clock += 1;
        self.last_used[file] = self.clock;
        Some(h)
    }

    pub fn insert(&mut self, file: usize, handle: Rc<File>) {
        if self.handles[file].is_none() {
            if self.open >= self.cap {
                self.close_least_recent();
            }
            self.open += 1;
        }
        self.clock += 1;
        self.last_used[file] = self.clock;
        self.handles[file] = Some(handle);
    }

    fn close_least_recent(&mut self) {
        let victim = (0..self.handles.len())
            .filter(|&i| self.handles[i].is_some())
            .min_by_key(|&i| self.last_used[i]);
        if let Some(i) = victim {
            self.handles[i] = None;
            self.open -= 1;
        }
    }
}
