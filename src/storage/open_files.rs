//! The bounded table of open file handles behind `Storage`: at most `cap` open at once,
//! least recently used closed first. Closing only drops our reference; an operation still
//! in flight keeps its handle alive until it completes. Each file is opened once however
//! many operations need it at the same moment: they wait for the open in flight.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::rc::Rc;
use tokio::sync::OnceCell;
use tokio_uring::fs::File;

/// An open in flight, shared by every caller that needs the same file meanwhile.
type Opening = Rc<OnceCell<Rc<File>>>;

/// The handles, and the opens in flight. A burst of writes to a file that is not open yet
/// used to open it once per write (a 2 GiB download: 52 opens and reservations of its one
/// file as its first writes arrived together; 200 files: 487 opens instead of ~400).
pub struct HandleTable {
    files: RefCell<OpenFiles>,
    opening: RefCell<HashMap<usize, Opening>>,
}

impl HandleTable {
    pub fn new(files: usize, cap: usize) -> HandleTable {
        HandleTable {
            files: RefCell::new(OpenFiles::new(files, cap)),
            opening: RefCell::new(HashMap::new()),
        }
    }

    /// The handle of `file` if it is open.
    pub fn get(&self, file: usize) -> Option<Rc<File>> {
        self.files.borrow_mut().get(file)
    }

    /// The handle of `file`, from `open` unless it is open or being opened. When the open in
    /// flight fails, its caller gets the error and the next waiter tries its own `open`.
    pub async fn get_or_open<F, Fut>(&self, file: usize, open: F) -> io::Result<Rc<File>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = io::Result<File>>,
    {
        if let Some(h) = self.get(file) {
            return Ok(h);
        }
        let cell = Rc::clone(self.opening.borrow_mut().entry(file).or_default());
        let opened = cell
            .get_or_try_init(|| async { open().await.map(Rc::new) })
            .await
            .cloned();
        // The first caller back publishes the outcome; the others share its handle.
        let first = (self.opening.borrow().get(&file)).is_some_and(|c| Rc::ptr_eq(c, &cell));
        if first {
            self.opening.borrow_mut().remove(&file);
            if let Ok(h) = &opened {
                self.files.borrow_mut().insert(file, Rc::clone(h));
            }
        }
        opened
    }
}

struct OpenFiles {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn callers_that_need_a_file_together_share_one_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        crate::runtime::start(async {
            let table = Rc::new(HandleTable::new(1, 4));
            let opens = Rc::new(Cell::new(0));
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let (table, opens, path) = (Rc::clone(&table), Rc::clone(&opens), path.clone());
                tasks.push(tokio_uring::spawn(async move {
                    let open = || async {
                        opens.set(opens.get() + 1);
                        File::open(&path).await
                    };
                    table.get_or_open(0, open).await.unwrap()
                }));
            }
            let mut handles = Vec::new();
            for t in tasks {
                handles.push(t.await.unwrap());
            }
            assert_eq!(opens.get(), 1, "opened once");
            assert!(handles.iter().all(|h| Rc::ptr_eq(h, &handles[0])));
            assert!(table.get(0).is_some_and(|h| Rc::ptr_eq(&h, &handles[0])));
        });
    }

    #[test]
    fn a_failed_open_is_reported_and_the_next_caller_tries_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later");
        crate::runtime::start(async {
            let table = HandleTable::new(1, 4);
            let missing = table.get_or_open(0, || File::open(&path)).await;
            assert!(missing.is_err());
            std::fs::write(&path, b"x").unwrap();
            assert!(table.get_or_open(0, || File::open(&path)).await.is_ok());
            assert!(table.get(0).is_some());
        });
    }
}
