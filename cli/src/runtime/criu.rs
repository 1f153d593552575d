//! Talking to CRIU over its RPC socket (`criu swrk`): the request and
//! response messages (a few fields of CRIU's `rpc.proto`, encoded by hand:
//! protobuf's wire format is varints and length-prefixed bytes) and one
//! session: spawn `criu swrk 3`, send the request, answer its notifications,
//! read the result.
//!
//! Why RPC and not criu's command line: only swrk restores the container's
//! init as a child of the caller (`rst_sibling`), takes descriptors to
//! inherit (`inherit_fd`: the new stdio pipes, the network namespace), and
//! reports through notifications: `post-dump` (the images are complete;
//! berth's answer decides whether criu may kill the container, so a berth
//! killed mid-checkpoint leaves it running), `post-restore` with the PID,
//! and `orphan-pts-master` with a new terminal master for a container that
//! had one.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::socket::{
    recvmsg, send, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};

use super::{Result, RuntimeError};

/// criu_req_type values berth uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestType {
    Dump = 1,
    Restore = 2,
    Notify = 6,
}

/// criu_cg_mode SOFT: criu records the processes' cgroups (and cgroup
/// namespace) and restores them below the roots it is given, setting no
/// property of a cgroup it did not create: berth makes the container's
/// cgroup with its limits and places criu in it first.
pub(crate) const CG_MODE_SOFT: u64 = 3;

/// A protobuf message being written: fields in any order, as protobuf
/// allows.
#[derive(Debug, Default, Clone)]
pub(crate) struct Message(Vec<u8>);

impl Message {
    fn key(&mut self, field: u32, wire_type: u8) {
        self.varint_raw((u64::from(field) << 3) | u64::from(wire_type));
    }

    fn varint_raw(&mut self, mut value: u64) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }

    pub fn uint(&mut self, field: u32, value: u64) -> &mut Self {
        self.key(field, 0);
        self.varint_raw(value);
        self
    }

    /// An int32: negative values are sign-extended to 64 bits (ten bytes),
    /// as protobuf encodes them.
    pub fn int(&mut self, field: u32, value: i32) -> &mut Self {
        self.uint(field, i64::from(value) as u64)
    }

    pub fn flag(&mut self, field: u32, value: bool) -> &mut Self {
        self.uint(field, u64::from(value))
    }

    pub fn bytes(&mut self, field: u32, value: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.varint_raw(value.len() as u64);
        self.0.extend_from_slice(value);
        self
    }

    pub fn string(&mut self, field: u32, value: &str) -> &mut Self {
        self.bytes(field, value.as_bytes())
    }

    pub fn message(&mut self, field: u32, value: &Message) -> &mut Self {
        self.bytes(field, &value.0)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// One field as read from the wire.
#[derive(Debug, PartialEq, Eq)]
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The fields of a message, in wire order; `None` for a malformed one.
fn fields(mut input: &[u8]) -> Option<Vec<(u32, Value<'_>)>> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let key = read_varint(&mut input)?;
        let field = u32::try_from(key >> 3).ok()?;
        let value = match key & 7 {
            0 => Value::Varint(read_varint(&mut input)?),
            1 => {
                input = input.get(8..)?;
                Value::Fixed
            }
            2 => {
                let len = usize::try_from(read_varint(&mut input)?).ok()?;
                let bytes = input.get(..len)?;
                input = &input[len..];
                Value::Bytes(bytes)
            }
            5 => {
                input = input.get(4..)?;
                Value::Fixed
            }
            _ => return None,
        };
        out.push((field, value));
    }
    Some(out)
}

/// What berth reads of a criu_resp.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Response {
    pub kind: u64,
    pub success: bool,
    /// criu_restore_resp.pid: the restored init.
    pub restored_pid: Option<i32>,
    /// criu_notify.script and .pid.
    pub notify_script: Option<String>,
    pub notify_pid: Option<i32>,
    pub errno: Option<i32>,
    pub error_message: Option<String>,
    /// criu_version.major/minor.
    pub version: Option<(u64, u64)>,
}

impl Response {
    pub fn parse(bytes: &[u8]) -> Option<Response> {
        let mut response = Response::default();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        for (field, value) in fields(bytes)? {
            match (field, value) {
                (1, Value::Varint(v)) => response.kind = v,
                (2, Value::Varint(v)) => response.success = v != 0,
                (4, Value::Bytes(inner)) => {
                    for (field, value) in fields(inner)? {
                        if let (1, Value::Varint(pid)) = (field, value) {
                            response.restored_pid = Some(pid as i32);
                        }
                    }
                }
                (5, Value::Bytes(inner)) => {
                    for (field, value) in fields(inner)? {
                        match (field, value) {
                            (1, Value::Bytes(s)) => response.notify_script = Some(text(s)),
                            (2, Value::Varint(pid)) => response.notify_pid = Some(pid as i32),
                            _ => {}
                        }
                    }
                }
                (7, Value::Varint(v)) => response.errno = Some(v as i32),
                (9, Value::Bytes(s)) => response.error_message = Some(text(s)),
                (10, Value::Bytes(inner)) => {
                    let (mut major, mut minor) = (0, 0);
                    for (field, value) in fields(inner)? {
                        match (field, value) {
                            (1, Value::Varint(v)) => major = v,
                            (2, Value::Varint(v)) => minor = v,
                            _ => {}
                        }
                    }
                    response.version = Some((major, minor));
                }
                _ => {}
            }
        }
        Some(response)
    }
}

/// A criu_req of `kind` with `opts`.
pub(crate) fn request(kind: RequestType, opts: Option<&Message>) -> Message {
    let mut req = Message::default();
    req.uint(1, kind as u64);
    if let Some(opts) = opts {
        req.message(2, opts);
    }
    req
}

/// What a notification handler tells criu.
pub(crate) type NotifyResult = std::result::Result<(), String>;

/// The criu binary, as found on PATH (Debian installs it in /usr/sbin,
/// which a user's PATH may lack).
fn criu_program() -> Result<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("criu"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| RuntimeError::Criu {
            reason: "criu is not installed (Debian: apt-get install criu)".into(),
        })
}

/// One `criu swrk` session. `inherit` are descriptors criu gets as 4, 5,
/// ... (in that order; the images and work directories are not among
/// them: criu opens those through the caller's own descriptors).
/// `request` makes the request from criu's PID (criu waits for it, so
/// criu can be placed in a cgroup first, race-free); `notify` answers each
/// notification (with the descriptor it carried, if any). Returns the
/// final response, successful or not.
pub(crate) fn session(
    inherit: &[BorrowedFd<'_>],
    log_dir: &Path,
    request: impl FnOnce(i32) -> Result<Message>,
    mut notify: impl FnMut(&Response, Option<OwnedFd>) -> NotifyResult,
) -> Result<Response> {
    let program = criu_program()?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| RuntimeError::system("socketpair for criu", e))?;
    // Moved above any target number first, so that placing them at 3, 4,
    // ... in the child can never overwrite one not yet placed.
    let mut sources = Vec::with_capacity(inherit.len() + 1);
    for fd in std::iter::once(theirs.as_raw_fd()).chain(inherit.iter().map(|f| f.as_raw_fd())) {
        // SAFETY: F_DUPFD_CLOEXEC on a valid descriptor returns a new
        // descriptor, owned here.
        let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100) };
        if high < 0 {
            return Err(RuntimeError::system(
                "duplicate a descriptor for criu",
                nix::Error::last(),
            ));
        }
        // SAFETY: `high` was just returned by fcntl and is owned by nobody.
        sources.push(unsafe { OwnedFd::from_raw_fd(high) });
    }
    drop(theirs);
    let raw_sources: Vec<RawFd> = sources.iter().map(|f| f.as_raw_fd()).collect();
    let mut command = Command::new(&program);
    command
        .args(["swrk", "3"])
        .current_dir(log_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // What criu says before it opens its log (it cannot start at all, say)
    // goes to its standard error.
    let output_path = log_dir.join(OUTPUT_LOG);
    match std::fs::File::create(&output_path) {
        Ok(file) => command.stderr(file),
        Err(_) => command.stderr(Stdio::null()),
    };
    // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            for (index, fd) in raw_sources.iter().enumerate() {
                // dup2 clears close-on-exec on the new descriptor.
                if libc::dup2(*fd, 3 + index as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| RuntimeError::Criu {
        reason: format!("cannot run {}: {e}", program.display()),
    })?;
    drop(sources);
    let outcome = (|| {
        let req = request(child.id() as i32)?;
        converse(&ours, &req, &mut notify)
    })();
    // criu ends once the conversation does (EOF on its socket).
    drop(ours);
    let status = child.wait();
    let response = outcome?;
    if let Ok(status) = status {
        if !status.success() && response.success {
            return Err(RuntimeError::Criu {
                reason: format!("criu exited with {status}"),
            });
        }
    }
    Ok(response)
}

fn converse(
    socket: &OwnedFd,
    req: &Message,
    notify: &mut impl FnMut(&Response, Option<OwnedFd>) -> NotifyResult,
) -> Result<Response> {
    let lost = |e: nix::Error| RuntimeError::system("talk to criu", e);
    send(socket.as_raw_fd(), req.as_bytes(), MsgFlags::empty()).map_err(lost)?;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let (length, fd) = {
            let mut iov = [io::IoSliceMut::new(&mut buffer)];
            let message = recvmsg::<()>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(lost)?;
            let mut fd = None;
            if let Ok(cmsgs) = message.cmsgs() {
                for cmsg in cmsgs {
                    if let ControlMessageOwned::ScmRights(fds) = cmsg {
                        for raw in fds {
                            // SAFETY: received with SCM_RIGHTS: a new
                            // descriptor owned by nobody else.
                            let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                            fd.get_or_insert(owned);
                        }
                    }
                }
            }
            (message.bytes, fd)
        };
        if length == 0 {
            return Err(RuntimeError::Criu {
                reason: "criu ended without an answer (see its log)".into(),
            });
        }
        let response = Response::parse(&buffer[..length]).ok_or_else(|| RuntimeError::Criu {
            reason: "criu sent a malformed answer".into(),
        })?;
        if response.kind != RequestType::Notify as u64 {
            return Ok(response);
        }
        let answer = notify(&response, fd);
        let mut reply = request(RequestType::Notify, None);
        reply.flag(3, answer.is_ok());
        send(socket.as_raw_fd(), reply.as_bytes(), MsgFlags::empty()).map_err(lost)?;
        if let Err(reason) = answer {
            return Err(RuntimeError::Criu { reason });
        }
    }
}

/// Where criu's standard error goes, in the log directory.
pub(crate) const OUTPUT_LOG: &str = "criu-output.log";

/// criu's own reason for a failure: the first line with "Error" in its
/// log `log_name` or, if it never opened its log, in its standard error
/// (criu writes one per failing step: the first is the cause, later ones
/// its consequences); else its error message.
pub(crate) fn reason_from_log(log_dir: &Path, log_name: &str, response: &Response) -> String {
    let read = |name: &str| std::fs::read_to_string(log_dir.join(name)).unwrap_or_default();
    let mut text = read(log_name);
    if !text.contains("Error") {
        text = read(OUTPUT_LOG);
    }
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("Error") || line.contains("error ("))
        .collect();
    if let Some(first) = errors.first() {
        // "(00.012345) Error (criu/vdso.c:613): vdso: Failed ..." -> after
        // the source location.
        let cleaned = first
            .split_once("): ")
            .map(|(_, rest)| rest)
            .unwrap_or(first)
            .trim();
        return cleaned.to_owned();
    }
    if let Some(message) = &response.error_message {
        return message.trim().to_owned();
    }
    match response.errno {
        Some(errno) => format!("criu failed ({})", nix::Error::from_raw(errno)),
        None => "criu failed without saying why".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_use_protobuf_wire_format() {
        let mut opts = Message::default();
        opts.int(1, -1)
            .uint(2, 300)
            .flag(3, true)
            .string(10, "dump.log");
        assert_eq!(
            opts.as_bytes(),
            [
                &[0x08][..],
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                &[0x10, 0xac, 0x02],
                &[0x18, 0x01],
                &[0x52, 0x08],
                b"dump.log",
            ]
            .concat()
        );
        let req = request(RequestType::Dump, Some(&opts));
        assert_eq!(req.as_bytes()[..3], [0x08, 0x01, 0x12]);
        assert_eq!(usize::from(req.as_bytes()[3]), opts.as_bytes().len());
    }

    #[test]
    fn responses_are_read_back() {
        let mut restore = Message::default();
        restore.uint(1, 4242);
        let mut notify = Message::default();
        notify.string(1, "post-restore").uint(2, 7);
        let mut resp = Message::default();
        resp.uint(1, 2)
            .flag(2, true)
            .message(4, &restore)
            .message(5, &notify)
            .uint(7, 2)
            .string(9, "boom")
            .bytes(99, b"ignored");
        let parsed = Response::parse(resp.as_bytes()).unwrap();
        assert_eq!(
            parsed,
            Response {
                kind: 2,
                success: true,
                restored_pid: Some(4242),
                notify_script: Some("post-restore".into()),
                notify_pid: Some(7),
                errno: Some(2),
                error_message: Some("boom".into()),
                version: None,
            }
        );
    }

    #[test]
    fn malformed_responses_are_refused_not_panicked_on() {
        for bad in [
            &[0x0a][..],
            &[0x0a, 0x05, 0x01],
            &[0x08],
            &[0x0f, 0x00],
            &[0xff; 11],
            &[0x09, 0x01],
        ] {
            assert_eq!(Response::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_first_error_of_the_log_is_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(OUTPUT_LOG),
            "(00.001) Version: 3.17.1\n\
             (00.002) Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable\n\
             (00.003) Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed\n",
        )
        .unwrap();
        let reason = reason_from_log(dir.path(), "dump.log", &Response::default());
        assert_eq!(reason, "vdso: Failed to fill self vdso symtable");
        std::fs::write(
            dir.path().join("dump.log"),
            "(00.1) Error (criu/cr-dump.c:1): Dumping FAILED.\n",
        )
        .unwrap();
        let reason = reason_from_log(dir.path(), "dump.log", &Response::default());
        assert_eq!(reason, "Dumping FAILED.");
        let empty = tempfile::tempdir().unwrap();
        let response = Response {
            error_message: Some("no such process".into()),
            ..Response::default()
        };
        assert_eq!(
            reason_from_log(empty.path(), "dump.log", &response),
            "no such process"
        );
    }
}
