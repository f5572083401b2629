//! Direct writes planned as their blocks arrive. When a run of blocks lies in one file, has
//! an aligned middle and a write slot is free right away, `Storage::stage` takes the slot and
//! the bounce buffer then, not when the write task runs, so the caller can fill the buffer
//! while it hashes the blocks (`CopyPlan`): the copy rides on the SHA-1 pass instead of being
//! a second pass over the bytes. Anything else goes through `Storage::write` as before.

use super::direct::{aligned_middle, AlignedBuf};
use super::{write_edges, Storage};
use crate::buffer::{for_each_part, Chunk};
use crate::hash::CopyPlan;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// A write with its slot and its bounce buffer taken; the buffer is filled through
/// `plan_copy` before `Storage::write_staged` runs.
pub struct StagedWrite {
    file: usize,
    /// Where the run starts in the file.
    offset: u64,
    /// The aligned part of the run, relative to its start; the bounce buffer's contents.
    middle: Range<usize>,
    bounce: AlignedBuf,
    _slot: OwnedSemaphorePermit,
}

impl StagedWrite {
    /// Plans the copy of the aligned middle of `chunks` (the run this write was staged for)
    /// into the bounce buffer.
    pub fn plan_copy<'a>(&'a mut self, chunks: &'a [Chunk], plan: &mut CopyPlan<'a>) {
        let mut dst = self.bounce.as_mut_slice();
        for_each_part(chunks, self.middle.start, self.middle.len(), |c, range| {
            let (part, rest) = std::mem::take(&mut dst).split_at_mut(range.len());
            dst = rest;
            plan.add(&c.as_slice()[range], part);
        });
    }
}

impl Storage {
    /// Stages the write of `chunks` at global offset `start` if it can go direct from a
    /// bounce buffer filled now: one file, a whole aligned page in it, direct writes on (and
    /// not left to the adaptive chooser), and a write slot free at once.
    pub fn stage(&self, start: u64, chunks: &[Chunk]) -> Option<StagedWrite> {
        if !self.direct_ok.get() || self.chooser.borrow().is_some() {
            return None;
        }
        let len: usize = chunks.iter().map(Chunk::len).sum();
        let mut segments = self.layout.segments_at(start, u32::try_from(len).ok()?);
        let only = segments.next()?;
        if only.pad || segments.next().is_some() {
            return None;
        }
        let middle = aligned_middle(only.file_offset, len as u64)?;
        let middle = middle.start as usize..middle.end as usize;
        let slot = Arc::clone(&self.write_slots).try_acquire_owned().ok()?;
        let mut bounce = self.bounce.borrow_mut().take(middle.len());
        bounce.set_len(middle.len());
        Some(StagedWrite {
            file: only.file,
            offset: only.file_offset,
            middle,
            bounce,
            _slot: slot,
        })
    }

    /// Writes a staged run: its unaligned edges from `chunks` through the page cache, its
    /// filled bounce buffer direct (or through the page cache where the file system refuses).
    pub async fn write_staged(&self, staged: StagedWrite, chunks: Vec<Chunk>) -> io::Result<()> {
        let StagedWrite {
            file,
            offset,
            middle,
            bounce,
            _slot,
        } = staged;
        let handle = self.handle(file).await?;
        self.dirty.borrow_mut()[file] = true;
        write_edges(&handle, offset, &chunks, &middle)?;
        drop(chunks);
        let at = offset + middle.start as u64;
        match self.direct_handle(file).await {
            Some(direct) => self
                .write_direct(&direct, &handle, at, bounce)
                .await
                .map(drop),
            None => {
                let (res, bounce) = handle.write_all_at(bounce, at).await;
                self.bounce.borrow_mut().give_back(bounce);
                res
            }
        }
    }
}
