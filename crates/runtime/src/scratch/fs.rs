//! `wasi:filesystem/types` with the scratch quota in front of it.
//!
//! wasmtime-wasi has no hook for limiting what a preopened directory may
//! grow to, so this view implements the interface by forwarding every call to
//! wasmtime-wasi's own implementation, first charging the quota for the calls
//! that can take more disk: `write`, `set-size`, creating entries
//! (`open-at` with `create`, `create-directory-at`, `symlink-at`, `link-at`)
//! and the output streams of `write-via-stream` and `append-via-stream`,
//! which are wrapped so each of their writes is charged too. A charge that
//! does not fit fails the call with `insufficient-space` (ENOSPC in the
//! guest). Linked over wasmtime-wasi's `wasi:filesystem/types`, it is the
//! only implementation a guest sees.

use std::sync::Arc;

use bytes::Bytes;
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::{
    DynOutputStream, FsError, FsResult, OutputStream, Pollable, StreamError, StreamResult,
};

use super::quota::{Full, ScratchQuota};
use crate::host::HostState;

/// The filesystem view of one execution, with its quota.
pub struct ScratchFs<'a> {
    inner: WasiFilesystemCtxView<'a>,
    quota: ScratchQuota,
}

struct ScratchFsData;

impl HasData for ScratchFsData {
    type Data<'a> = ScratchFs<'a>;
}

/// Links `wasi:filesystem/types` over wasmtime-wasi's, charging each
/// execution's [`HostState::scratch_quota`].
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    fn view(state: &mut HostState) -> ScratchFs<'_> {
        let quota = state.scratch_quota.clone();
        ScratchFs {
            inner: state.filesystem(),
            quota,
        }
    }
    linker.allow_shadowing(true);
    let linked = types::add_to_linker::<HostState, ScratchFsData>(linker, view);
    linker.allow_shadowing(false);
    linked
}

fn full(_: Full) -> FsError {
    ErrorCode::InsufficientSpace.into()
}

fn borrow(fd: &Resource<Descriptor>) -> Resource<Descriptor> {
    Resource::new_borrow(fd.rep())
}

impl ScratchFs<'_> {
    /// The open file behind `fd`; `None` for a directory or a bad handle,
    /// which the forwarded call then reports.
    fn file(&self, fd: &Resource<Descriptor>) -> Option<Arc<std::fs::File>> {
        match self.inner.table.get(fd) {
            Ok(Descriptor::File(f)) => Some(f.file.clone()),
            _ => None,
        }
    }

    /// Replaces the stream wasmtime-wasi made with one charging the quota.
    fn charged(
        &mut self,
        stream: Resource<DynOutputStream>,
        file: Option<Arc<std::fs::File>>,
        offset: Option<u64>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let Some(file) = file else {
            return Ok(stream);
        };
        let inner = self.inner.table.delete(stream)?;
        let wrapped: DynOutputStream = Box::new(ChargedStream {
            inner,
            file,
            offset,
            quota: self.quota.clone(),
        });
        Ok(self.inner.table.push(wrapped)?)
    }
}

impl types::Host for ScratchFs<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.inner, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        types::Host::filesystem_error_code(&mut self.inner, err)
    }
}

impl HostDescriptor for ScratchFs<'_> {
    async fn advise(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        self.inner.advise(fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.inner.sync_data(fd).await
    }

    async fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorFlags> {
        self.inner.get_flags(fd).await
    }

    async fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorType> {
        self.inner.get_type(fd).await
    }

    async fn set_size(&mut self, fd: Resource<Descriptor>, size: types::Filesize) -> FsResult<()> {
        if let Some(file) = self.file(&fd) {
            self.quota.charge_resize(&file, size).map_err(full)?;
        }
        self.inner.set_size(fd, size).await
    }

    async fn set_times(
        &mut self,
        fd: Resource<Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.inner.set_times(fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        self.inner.read(fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        if let Some(file) = self.file(&fd) {
            self.quota
                .charge_write(&file, Some(offset), buf.len() as u64)
                .map_err(full)?;
        }
        self.inner.write(fd, buf, offset).await
    }

    async fn read_directory(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        self.inner.read_directory(fd).await
    }

    async fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.inner.sync(fd).await
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        self.quota.charge_entry().map_err(full)?;
        self.inner.create_directory_at(fd, path).await
    }

    async fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorStat> {
        self.inner.stat(fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        self.inner.stat_at(fd, path_flags, path).await
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.inner
            .set_times_at(fd, path_flags, path, atim, mtim)
            .await
    }

    async fn link_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        self.quota.charge_entry().map_err(full)?;
        self.inner
            .link_at(fd, old_path_flags, old_path, new_descriptor, new_path)
            .await
    }

    async fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        if oflags.contains(types::OpenFlags::CREATE) {
            self.quota.charge_entry().map_err(full)?;
        }
        let opened = self
            .inner
            .open_at(fd, path_flags, path, oflags, flags)
            .await?;
        if let Some(file) = self.file(&opened) {
            self.quota.opened(&file);
        }
        Ok(opened)
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        HostDescriptor::drop(&mut self.inner, fd)
    }

    async fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        self.inner.readlink_at(fd, path).await
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        self.inner.remove_directory_at(fd, path).await
    }

    async fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        self.inner.rename_at(fd, old_path, new_fd, new_path).await
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        self.quota.charge_entry().map_err(full)?;
        self.inner.symlink_at(fd, src_path, dest_path).await
    }

    async fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        self.inner.unlink_file_at(fd, path).await
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<wasmtime_wasi::p2::DynInputStream>> {
        self.inner.read_via_stream(fd, offset)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        let file = self.file(&fd);
        let stream = self.inner.write_via_stream(borrow(&fd), offset)?;
        self.charged(stream, file, Some(offset))
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let file = self.file(&fd);
        let stream = self.inner.append_via_stream(borrow(&fd))?;
        self.charged(stream, file, None)
    }

    async fn is_same_object(
        &mut self,
        a: Resource<Descriptor>,
        b: Resource<Descriptor>,
    ) -> wasmtime::Result<bool> {
        self.inner.is_same_object(a, b).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        self.inner.metadata_hash(fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        self.inner.metadata_hash_at(fd, path_flags, path).await
    }
}

impl HostDirectoryEntryStream for ScratchFs<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        self.inner.read_directory_entry(stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.inner, stream)
    }
}

/// A file's output stream whose writes are charged to the quota first.
struct ChargedStream {
    inner: DynOutputStream,
    file: Arc<std::fs::File>,
    /// Where the next write lands; `None` appends.
    offset: Option<u64>,
    quota: ScratchQuota,
}

impl ChargedStream {
    fn charge(&mut self, len: usize) -> StreamResult<()> {
        self.quota
            .charge_write(&self.file, self.offset, len as u64)
            .map_err(|full| StreamError::LastOperationFailed(std::io::Error::from(full).into()))
    }

    fn advance(&mut self, len: usize) {
        if let Some(offset) = &mut self.offset {
            *offset = offset.saturating_add(len as u64);
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for ChargedStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for ChargedStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let len = bytes.len();
        self.charge(len)?;
        self.inner.write(bytes)?;
        self.advance(len);
        Ok(())
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        let len = bytes.len();
        self.charge(len)?;
        self.inner.blocking_write_and_flush(bytes).await?;
        self.advance(len);
        Ok(())
    }

    fn write_zeroes(&mut self, len: usize) -> StreamResult<()> {
        self.charge(len)?;
        self.inner.write_zeroes(len)?;
        self.advance(len);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    async fn write_ready(&mut self) -> StreamResult<usize> {
        self.inner.write_ready().await
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}
