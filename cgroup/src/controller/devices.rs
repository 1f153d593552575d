//! devices: which device nodes a container may open or create.
//!
//! The rules are an allow-list: everything else is denied, mknod of new
//! devices included.
//!
//! - cgroup v1: `a` is written to `devices.deny` (deny everything, forget
//!   inherited exceptions), then each rule to `devices.allow`.
//! - cgroup v2 has no devices file: a `BPF_PROG_TYPE_CGROUP_DEVICE` program
//!   implementing the allow-list is loaded and attached to the cgroup
//!   (`BPF_CGROUP_DEVICE`, `BPF_F_ALLOW_MULTI`, so that programs of parent
//!   cgroups, e.g. systemd's, still apply too). The kernel keeps the
//!   program for as long as the cgroup exists; our descriptor is closed
//!   once it is attached.

use std::fmt;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use super::Dir;
use crate::error::{CgroupError, Result};
use crate::fsio;

/// The kind of device a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceType {
    /// Every device (`a`): the rule allows everything, whatever its
    /// numbers and access say, as on cgroup v1.
    All,
    /// Character devices (`c`).
    Char,
    /// Block devices (`b`).
    Block,
}

impl DeviceType {
    fn letter(self) -> char {
        match self {
            DeviceType::All => 'a',
            DeviceType::Char => 'c',
            DeviceType::Block => 'b',
        }
    }

    /// The kernel's BPF_DEVCG_DEV_* value (`All` has none).
    fn bpf_type(self) -> Option<i32> {
        match self {
            DeviceType::All => None,
            DeviceType::Block => Some(1),
            DeviceType::Char => Some(2),
        }
    }
}

/// What a rule allows: any of read, write and mknod (`rwm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceAccess(u8);

impl DeviceAccess {
    /// mknod(2) of such a device (`m`).
    pub const MKNOD: DeviceAccess = DeviceAccess(1);
    /// Opening for reading (`r`).
    pub const READ: DeviceAccess = DeviceAccess(2);
    /// Opening for writing (`w`).
    pub const WRITE: DeviceAccess = DeviceAccess(4);
    /// `rwm`.
    pub const ALL: DeviceAccess = DeviceAccess(7);

    /// The bits, as the kernel's BPF_DEVCG_ACC_* (mknod 1, read 2, write 4).
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether every access of `other` is in `self`.
    pub fn contains(self, other: DeviceAccess) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for DeviceAccess {
    type Output = DeviceAccess;
    fn bitor(self, other: DeviceAccess) -> DeviceAccess {
        DeviceAccess(self.0 | other.0)
    }
}

impl fmt::Display for DeviceAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (access, letter) in [
            (DeviceAccess::READ, "r"),
            (DeviceAccess::WRITE, "w"),
            (DeviceAccess::MKNOD, "m"),
        ] {
            if self.contains(access) {
                f.write_str(letter)?;
            }
        }
        Ok(())
    }
}

/// One allow rule of the device cgroup, written as cgroup v1 does (and
/// docker's `--device-cgroup-rule`): `c 1:3 rwm`, `c 136:* rw`, `b *:* m`,
/// `a`. `None` for a number is `*` (any).
///
/// Serialized as that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct DeviceRule {
    /// Character, block or all devices.
    pub kind: DeviceType,
    /// The major number; `None` is any.
    pub major: Option<u32>,
    /// The minor number; `None` is any.
    pub minor: Option<u32>,
    /// What is allowed.
    pub access: DeviceAccess,
}

impl DeviceRule {
    /// `c MAJOR:MINOR rwm`.
    pub const fn char(major: u32, minor: Option<u32>) -> Self {
        DeviceRule {
            kind: DeviceType::Char,
            major: Some(major),
            minor,
            access: DeviceAccess::ALL,
        }
    }

    /// Docker's default device rules for a container that is not
    /// privileged: read, write and mknod of /dev/null (1:3), zero (1:5),
    /// full (1:7), random (1:8), urandom (1:9), tty (5:0), console (5:1),
    /// ptmx (5:2) and the pseudo-terminals (136:*); nothing else, and no
    /// mknod of other devices (docker also allows `c *:* m` and `b *:* m`;
    /// berth does not, so that `mknod /dev/sda b 8 0` fails).
    pub fn docker_defaults() -> Vec<DeviceRule> {
        vec![
            DeviceRule::char(1, Some(3)),
            DeviceRule::char(1, Some(5)),
            DeviceRule::char(1, Some(7)),
            DeviceRule::char(1, Some(8)),
            DeviceRule::char(1, Some(9)),
            DeviceRule::char(5, Some(0)),
            DeviceRule::char(5, Some(1)),
            DeviceRule::char(5, Some(2)),
            DeviceRule::char(136, None),
        ]
    }

    /// Whether this rule allows `access` to the device `kind` (`Char` or
    /// `Block`) `major:minor`. This is what the v2 program computes, rule
    /// by rule.
    pub fn allows(&self, kind: DeviceType, major: u32, minor: u32, access: DeviceAccess) -> bool {
        if self.kind == DeviceType::All {
            return true;
        }
        self.kind == kind
            && self.access.contains(access)
            && self.major.map_or(true, |m| m == major)
            && self.minor.map_or(true, |m| m == minor)
    }
}

impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == DeviceType::All {
            return f.write_str("a *:* rwm");
        }
        let number = |n: Option<u32>| n.map_or_else(|| "*".to_owned(), |n| n.to_string());
        write!(
            f,
            "{} {}:{} {}",
            self.kind.letter(),
            number(self.major),
            number(self.minor),
            self.access
        )
    }
}

impl FromStr for DeviceRule {
    type Err = CgroupError;

    /// `TYPE MAJOR:MINOR ACCESS` with TYPE `a`, `c` or `b`, MAJOR and MINOR
    /// numbers or `*`, ACCESS a non-empty combination of `r`, `w`, `m`; or
    /// just `a`. An `a` rule must be `a` or `a *:* rwm` (it allows
    /// everything).
    fn from_str(input: &str) -> Result<Self> {
        let invalid = |reason: &str| CgroupError::InvalidValue {
            what: "device rule",
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let fields: Vec<&str> = input.split_whitespace().collect();
        let kind = match fields.first().copied() {
            Some("a") => DeviceType::All,
            Some("c") => DeviceType::Char,
            Some("b") => DeviceType::Block,
            _ => {
                return Err(invalid(
                    "expected TYPE MAJOR:MINOR ACCESS with TYPE a, c or b",
                ))
            }
        };
        if kind == DeviceType::All {
            return match fields[1..] {
                [] | ["*:*", "rwm"] => Ok(DeviceRule {
                    kind,
                    major: None,
                    minor: None,
                    access: DeviceAccess::ALL,
                }),
                _ => Err(invalid("an `a` rule allows every device: write it `a`")),
            };
        }
        let [_, numbers, access_text] = fields[..] else {
            return Err(invalid("expected TYPE MAJOR:MINOR ACCESS, e.g. c 1:3 rwm"));
        };
        let (major, minor) = numbers
            .split_once(':')
            .ok_or_else(|| invalid("expected MAJOR:MINOR, e.g. 1:3 or 136:*"))?;
        let number = |s: &str| -> Result<Option<u32>> {
            match s {
                "*" => Ok(None),
                _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
                    .parse()
                    .map(Some)
                    .map_err(|_| invalid("device number too large")),
                _ => Err(invalid("device numbers are decimal numbers or *")),
            }
        };
        let mut access = 0u8;
        for c in access_text.chars() {
            let bit = match c {
                'r' => DeviceAccess::READ,
                'w' => DeviceAccess::WRITE,
                'm' => DeviceAccess::MKNOD,
                _ => return Err(invalid("access is a combination of r, w and m")),
            };
            if access & bit.0 != 0 {
                return Err(invalid("access names a letter twice"));
            }
            access |= bit.0;
        }
        Ok(DeviceRule {
            kind,
            major: number(major)?,
            minor: number(minor)?,
            access: DeviceAccess(access),
        })
    }
}

impl From<DeviceRule> for String {
    fn from(rule: DeviceRule) -> Self {
        rule.to_string()
    }
}

impl TryFrom<String> for DeviceRule {
    type Error = CgroupError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// Deny every device except what `rules` allow.
pub(crate) fn set_rules(dir: Dir, rules: &[DeviceRule]) -> Result<()> {
    match dir {
        Dir::V1(path) => {
            for (file, value) in v1_writes(rules) {
                fsio::write(&path.join(file), &value)?;
            }
            Ok(())
        }
        Dir::V2(path) => attach_program(path, &program(rules)),
    }
}

/// The v1 writes, in order: `a` to devices.deny (deny all, which the kernel
/// accepts while the cgroup has no children), then each rule to
/// devices.allow.
pub(crate) fn v1_writes(rules: &[DeviceRule]) -> Vec<(&'static str, String)> {
    let mut writes = vec![("devices.deny", "a".to_owned())];
    for rule in rules {
        let value = match rule.kind {
            // The kernel reads an `a` rule as the single letter.
            DeviceType::All => "a".to_owned(),
            _ => rule.to_string(),
        };
        writes.push(("devices.allow", value));
    }
    writes
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcodes (class | op | source) used by the device program.
/// BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off).
const LDX_MEM_W: u8 = 0x61;
/// BPF_ALU64 | BPF_AND | BPF_K: dst &= imm.
const AND64_IMM: u8 = 0x57;
/// BPF_ALU64 | BPF_RSH | BPF_K: dst >>= imm.
const RSH64_IMM: u8 = 0x77;
/// BPF_ALU64 | BPF_MOV | BPF_X: dst = src.
const MOV64_REG: u8 = 0xbf;
/// BPF_ALU64 | BPF_MOV | BPF_K: dst = imm.
const MOV64_IMM: u8 = 0xb7;
/// BPF_JMP | BPF_JNE | BPF_K: if dst != imm, skip `off` instructions.
const JNE_IMM: u8 = 0x55;
/// BPF_JMP | BPF_EXIT: return r0.
const EXIT: u8 = 0x95;

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Insn {
            code,
            regs: (src << 4) | dst,
            off,
            imm,
        }
    }
}

/// Registers: r1 holds the context (`struct bpf_cgroup_dev_ctx { u32
/// access_type; u32 major; u32 minor; }`); r2 to r5 get the device type,
/// the access, the major and the minor; r0 is the verdict.
const R0: u8 = 0;
const R1: u8 = 1;
const R2_TYPE: u8 = 2;
const R3_ACCESS: u8 = 3;
const R4_MAJOR: u8 = 4;
const R5_MINOR: u8 = 5;

/// The device program for `rules`: 1 (allow) if one rule allows the
/// access, else 0 (deny).
///
/// ```text
///     r2 = ctx->access_type & 0xffff     device type
///     r3 = ctx->access_type >> 16        access (mknod 1, read 2, write 4)
///     r4 = ctx->major
///     r5 = ctx->minor
///   for each rule (a failed test jumps to the next rule):
///     if r2 != TYPE goto next
///     r1 = r3; r1 &= ~ACCESS; if r1 != 0 goto next    (unless rwm)
///     if r4 != MAJOR goto next                         (unless *)
///     if r5 != MINOR goto next                         (unless *)
///     r0 = 1; exit
///   next: ...
///     r0 = 0; exit
/// ```
///
/// A rule without any test (`a`) ends the program, since the verifier
/// refuses unreachable instructions. Device numbers above `i32::MAX` (no
/// real device has them: majors have 12 bits, minors 20) never match.
pub(crate) fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut prog = vec![
        Insn::new(LDX_MEM_W, R2_TYPE, R1, 0, 0),
        Insn::new(AND64_IMM, R2_TYPE, 0, 0, 0xffff),
        Insn::new(LDX_MEM_W, R3_ACCESS, R1, 0, 0),
        Insn::new(RSH64_IMM, R3_ACCESS, 0, 0, 16),
        Insn::new(LDX_MEM_W, R4_MAJOR, R1, 4, 0),
        Insn::new(LDX_MEM_W, R5_MINOR, R1, 8, 0),
    ];
    for rule in rules {
        // Jumps carry a placeholder offset, fixed once the block is known.
        let mut block = Vec::new();
        if let Some(kind) = rule.kind.bpf_type() {
            block.push(Insn::new(JNE_IMM, R2_TYPE, 0, 0, kind));
            if rule.access != DeviceAccess::ALL {
                block.push(Insn::new(MOV64_REG, R1, R3_ACCESS, 0, 0));
                block.push(Insn::new(
                    AND64_IMM,
                    R1,
                    0,
                    0,
                    !i32::from(rule.access.bits()),
                ));
                block.push(Insn::new(JNE_IMM, R1, 0, 0, 0));
            }
            if let Some(major) = rule.major {
                block.push(Insn::new(JNE_IMM, R4_MAJOR, 0, 0, major as i32));
            }
            if let Some(minor) = rule.minor {
                block.push(Insn::new(JNE_IMM, R5_MINOR, 0, 0, minor as i32));
            }
        }
        let unconditional = block.is_empty();
        block.push(Insn::new(MOV64_IMM, R0, 0, 0, 1));
        block.push(Insn::new(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, insn) in block.iter_mut().enumerate() {
            if insn.code == JNE_IMM {
                // To the first instruction after this block.
                insn.off = (len - i - 1) as i16;
            }
        }
        prog.extend(block);
        if unconditional {
            return prog;
        }
    }
    prog.push(Insn::new(MOV64_IMM, R0, 0, 0, 0));
    prog.push(Insn::new(EXIT, 0, 0, 0, 0));
    prog
}

// bpf(2) commands, program and attach types, flags (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr` (up to
/// expected_attach_type; the kernel zero-fills the rest).
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// bpf(cmd, attr, sizeof *attr).
///
/// # Safety
///
/// `attr` must be the attribute struct of `cmd`, and every pointer in it
/// must be valid for what the kernel does with it during the call.
unsafe fn bpf<T>(cmd: libc::c_int, attr: &T) -> std::result::Result<libc::c_long, Errno> {
    // SAFETY: per this function's contract; the size passed is that of T.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    Errno::result(ret)
}

const LICENSE: &std::ffi::CStr = c"Apache-2.0";

/// Load `prog` as a cgroup device program; on failure, the verifier's log
/// (from a second attempt) is returned with the errno.
fn load(prog: &[Insn]) -> std::result::Result<OwnedFd, (Errno, String)> {
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"berth_devcg");
    let attempt = |log: Option<&mut Vec<u8>>| {
        let (log_level, log_size, log_buf) = match log {
            Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
            None => (0, 0, 0),
        };
        let attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: prog.len() as u32,
            insns: prog.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            log_level,
            log_size,
            log_buf,
            kern_version: 0,
            prog_flags: 0,
            prog_name: name,
            prog_ifindex: 0,
            expected_attach_type: 0,
        };
        // SAFETY: attr is a BPF_PROG_LOAD attribute; insns points to
        // `prog.len()` instructions and license to a NUL-terminated string,
        // both alive for the call; log_buf, when set, points to log_size
        // writable bytes that outlive the call.
        unsafe { bpf(BPF_PROG_LOAD, &attr) }
    };
    match attempt(None) {
        // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else
        // owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(errno) => {
            let mut buf = vec![0u8; 1 << 16];
            let _ = attempt(Some(&mut buf));
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            Err((
                errno,
                String::from_utf8_lossy(&buf[..end]).trim().to_owned(),
            ))
        }
    }
}

/// Load the program and attach it to the cgroup directory `path`.
fn attach_program(path: &Path, prog: &[Insn]) -> Result<()> {
    let error = |step: &'static str, source: Errno, log: String| CgroupError::DeviceFilter {
        path: path.to_owned(),
        step,
        source,
        log,
    };
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            error(
                "open the cgroup",
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                String::new(),
            )
        })?;
    let prog_fd = load(prog).map_err(|(errno, log)| error("load the program", errno, log))?;
    let attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    // SAFETY: attr is a BPF_PROG_ATTACH attribute holding two open
    // descriptors; it contains no pointers.
    unsafe { bpf(BPF_PROG_ATTACH, &attr) }
        .map_err(|errno| error("attach the program", errno, String::new()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A userspace interpreter for the instructions [`program`] emits.
    fn run(prog: &[Insn], ctx: [u32; 3]) -> u64 {
        let mut reg = [0u64; 11];
        let mut pc = 0usize;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 10_000, "runaway program");
            let insn = prog[pc];
            let dst = usize::from(insn.regs & 0xf);
            let src = usize::from(insn.regs >> 4);
            let imm = i64::from(insn.imm) as u64;
            pc += 1;
            match insn.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    assert!(insn.off % 4 == 0 && (0..12).contains(&insn.off));
                    reg[dst] = u64::from(ctx[insn.off as usize / 4]);
                }
                AND64_IMM => reg[dst] &= imm,
                RSH64_IMM => reg[dst] >>= imm,
                MOV64_REG => reg[dst] = reg[src],
                MOV64_IMM => reg[dst] = imm,
                JNE_IMM => {
                    if reg[dst] != imm {
                        pc = (pc as isize + insn.off as isize) as usize;
                    }
                }
                EXIT => return reg[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
            assert!(pc < prog.len(), "fell off the end");
        }
    }

    fn ctx(kind: DeviceType, major: u32, minor: u32, access: DeviceAccess) -> [u32; 3] {
        let kind = kind.bpf_type().unwrap() as u32;
        [(u32::from(access.bits()) << 16) | kind, major, minor]
    }

    fn rule(s: &str) -> DeviceRule {
        s.parse().unwrap()
    }

    #[test]
    fn rules_parse_and_print() {
        for text in ["c 1:3 rwm", "c 136:* rw", "b *:* m", "b 8:0 r", "c *:5 wm"] {
            assert_eq!(rule(text).to_string(), text);
        }
        assert_eq!(rule("  c  1:3   mwr ").to_string(), "c 1:3 rwm");
        assert_eq!(rule("a").to_string(), "a *:* rwm");
        assert_eq!(rule("a *:* rwm").kind, DeviceType::All);
        assert_eq!(rule("c 1:3 rwm"), DeviceRule::char(1, Some(3)));
        for bad in [
            "",
            "x 1:3 rwm",
            "c 1:3",
            "c 1 rwm",
            "c 1:3 rwx",
            "c 1:3 rr",
            "c -1:3 r",
            "c 1:3 ",
            "c :3 r",
            "c 99999999999:1 r",
            "a 1:3 r",
            "c 1:3 rwm extra",
        ] {
            let err = bad.parse::<DeviceRule>().unwrap_err();
            assert!(
                matches!(
                    err,
                    CgroupError::InvalidValue {
                        what: "device rule",
                        ..
                    }
                ),
                "{bad:?}: {err}"
            );
        }
        // Serialized as the text.
        assert_eq!(String::from(rule("c 136:* rw")), "c 136:* rw");
        assert_eq!(
            DeviceRule::try_from("b 8:0 r".to_owned()).unwrap(),
            rule("b 8:0 r")
        );
    }

    #[test]
    fn v1_denies_all_then_allows_each_rule() {
        let writes = v1_writes(&DeviceRule::docker_defaults());
        let text: Vec<String> = writes.iter().map(|(f, v)| format!("{f} {v}")).collect();
        assert_eq!(
            text,
            [
                "devices.deny a",
                "devices.allow c 1:3 rwm",
                "devices.allow c 1:5 rwm",
                "devices.allow c 1:7 rwm",
                "devices.allow c 1:8 rwm",
                "devices.allow c 1:9 rwm",
                "devices.allow c 5:0 rwm",
                "devices.allow c 5:1 rwm",
                "devices.allow c 5:2 rwm",
                "devices.allow c 136:* rwm",
            ]
        );
        assert_eq!(v1_writes(&[rule("a")])[1], ("devices.allow", "a".into()));
    }

    #[test]
    fn v1_files_in_a_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        set_rules(Dir::V1(dir.path()), &DeviceRule::docker_defaults()).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("devices.deny"), "a");
        // Each write replaces the fake file: the last one is left.
        assert_eq!(read("devices.allow"), "c 136:* rwm");
        let missing = tempfile::tempdir().unwrap();
        let gone = missing.path().join("gone");
        let err = set_rules(Dir::V1(&gone), &[]).unwrap_err();
        assert!(err.to_string().contains("devices.deny"), "{err}");
    }

    #[test]
    fn program_matches_the_rules() {
        use DeviceType::{Block, Char};
        let accesses = [
            DeviceAccess::READ,
            DeviceAccess::WRITE,
            DeviceAccess::MKNOD,
            DeviceAccess::READ | DeviceAccess::WRITE,
            DeviceAccess::ALL,
        ];
        let rule_sets: Vec<Vec<DeviceRule>> = vec![
            DeviceRule::docker_defaults(),
            vec![],
            vec![rule("b 8:* r"), rule("c *:3 wm"), rule("c 10:200 rw")],
            vec![rule("c 1:3 rwm"), rule("a"), rule("b 8:0 r")],
            vec![rule("c *:* m"), rule("b *:* m")],
        ];
        for rules in &rule_sets {
            let prog = program(rules);
            for kind in [Char, Block] {
                for major in [0, 1, 5, 8, 10, 136, 254, 4095] {
                    for minor in [0, 1, 3, 5, 9, 200, 1 << 19] {
                        for access in accesses {
                            let want = rules.iter().any(|r| r.allows(kind, major, minor, access));
                            let got = run(&prog, ctx(kind, major, minor, access));
                            assert_eq!(
                                got,
                                u64::from(want),
                                "{rules:?}: {kind:?} {major}:{minor} {access}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn defaults_allow_the_standard_devices_only() {
        let prog = program(&DeviceRule::docker_defaults());
        let rw = DeviceAccess::READ | DeviceAccess::WRITE;
        let allowed = |kind, major, minor, access| run(&prog, ctx(kind, major, minor, access)) == 1;
        assert!(allowed(DeviceType::Char, 1, 3, rw)); // /dev/null
        assert!(allowed(DeviceType::Char, 136, 7, rw)); // /dev/pts/7
        assert!(allowed(DeviceType::Char, 1, 9, DeviceAccess::MKNOD));
        assert!(!allowed(DeviceType::Block, 8, 0, DeviceAccess::READ)); // /dev/sda
        assert!(!allowed(DeviceType::Block, 8, 0, DeviceAccess::MKNOD));
        assert!(!allowed(DeviceType::Char, 1, 1, DeviceAccess::READ)); // /dev/mem
        assert!(!allowed(DeviceType::Char, 10, 200, rw)); // /dev/net/tun
                                                          // The instruction stream: the prologue, then 5 instructions per
                                                          // rule with a major and a minor (3 tests, r0 = 1, exit), 4 for
                                                          // 136:*, then the deny.
        assert_eq!(prog.len(), 6 + 8 * 5 + 4 + 2);
        assert_eq!(prog[6], Insn::new(JNE_IMM, R2_TYPE, 0, 4, 2));
        assert_eq!(prog[7], Insn::new(JNE_IMM, R4_MAJOR, 0, 3, 1));
        assert_eq!(prog[8], Insn::new(JNE_IMM, R5_MINOR, 0, 2, 3));
        assert_eq!(prog.last(), Some(&Insn::new(EXIT, 0, 0, 0, 0)));
    }

    #[test]
    fn an_allow_all_rule_ends_the_program() {
        let prog = program(&[rule("c 1:3 rwm"), rule("a"), rule("b 8:0 r")]);
        assert_eq!(prog.len(), 6 + 5 + 2);
        assert_eq!(prog[prog.len() - 2], Insn::new(MOV64_IMM, R0, 0, 0, 1));
        // A partial access mask is checked.
        let prog = program(&[rule("c 1:3 r")]);
        assert_eq!(prog[7], Insn::new(MOV64_REG, R1, R3_ACCESS, 0, 0));
        assert_eq!(prog[8], Insn::new(AND64_IMM, R1, 0, 0, !2));
    }
}
