//! A compiler from a per-syscall policy to one classic-BPF seccomp program.
//!
//! The program checks the architecture, then runs a **binary search** over syscall-number ranges
//! and ends in a small leaf per range. A syscall costs about log2(ranges) + 4 instructions,
//! whatever its number. A linear chain of comparisons (what seccompiler emits) costs up to
//! several hundred per syscall, and the kernel pays that again when it installs the filter: it
//! runs the program once per syscall number to fill its action cache. Measured here, the
//! linear pair of filters took ~1 ms to install per execution; this one takes a few µs.
//!
//! Every subtree of the search is self-contained (its leaves return), so jumps only go forward
//! within it; a left subtree too long for an 8-bit jump offset is skipped with a 32-bit `ja`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use libc::sock_filter;

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("the seccomp program has {0} instructions, more than the kernel's limit of {MAX_INSTRUCTIONS}")]
    TooLong(usize),
}

/// The kernel's `BPF_MAXINSNS`.
pub const MAX_INSTRUCTIONS: usize = 4096;

// Classic BPF opcodes (linux/bpf_common.h): class | size/op | mode/source.
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JMP_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JMP_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

// Offsets in `struct seccomp_data`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;

// SECCOMP_RET_* values.
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

/// What the kernel does with a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    /// Fail with this errno, without running the syscall.
    Errno(u16),
    KillProcess,
}

impl Action {
    fn ret(self) -> u32 {
        match self {
            Action::Allow => RET_ALLOW,
            Action::Errno(errno) => RET_ERRNO | u32::from(errno),
            Action::KillProcess => RET_KILL_PROCESS,
        }
    }
}

/// The decision for one syscall number. Argument checks read the **low 32 bits** of the
/// argument, as the kernel does for `int` arguments (ioctl commands, socket families), so
/// high bits cannot disguise a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Always(Action),
    /// The verdict of the first case whose value the argument equals (a case may check another
    /// argument in turn), `otherwise` when none does.
    ArgSwitch {
        arg: u8,
        cases: Vec<(u32, Verdict)>,
        otherwise: Action,
    },
    /// As `ArgSwitch`, on the bits of the argument in `mask` only (a field of a flags word).
    ArgFieldSwitch {
        arg: u8,
        mask: u32,
        cases: Vec<(u32, Verdict)>,
        otherwise: Action,
    },
    /// `matched` when the argument has any bit of `mask` set, `otherwise` when not.
    ArgAnyBit {
        arg: u8,
        mask: u32,
        matched: Action,
        otherwise: Action,
    },
}

/// A whole filter.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The `AUDIT_ARCH_*` value of the native architecture.
    pub arch: u32,
    /// For any other architecture (e.g. i386 `int 0x80` on x86_64).
    pub foreign_arch: Action,
    /// Syscall numbers from this one up (x32 on x86_64) get `above_action`.
    pub above: Option<(u32, Action)>,
    pub syscalls: BTreeMap<u32, Verdict>,
    /// For syscall numbers not listed.
    pub default: Action,
}

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn arg_low_offset(arg: u8) -> u32 {
    let low_half = if cfg!(target_endian = "little") { 0 } else { 4 };
    OFFSET_ARGS + 8 * u32::from(arg) + low_half
}

/// Compiles the policy into a program ready for `SECCOMP_SET_MODE_FILTER`.
pub fn compile(policy: &Policy) -> Result<Vec<sock_filter>, BpfError> {
    let mut program = vec![
        insn(LD_W_ABS, 0, 0, OFFSET_ARCH),
        insn(JMP_JEQ_K, 1, 0, policy.arch),
        insn(RET_K, 0, 0, policy.foreign_arch.ret()),
        insn(LD_W_ABS, 0, 0, OFFSET_NR),
    ];
    program.extend(search(&ranges(policy)));
    if program.len() > MAX_INSTRUCTIONS {
        return Err(BpfError::TooLong(program.len()));
    }
    Ok(program)
}

/// Splits the whole syscall-number space into ranges of equal verdicts, each `(first, verdict)`.
fn ranges(policy: &Policy) -> Vec<(u32, Verdict)> {
    let default = Verdict::Always(policy.default);
    let mut ranges: Vec<(u32, Verdict)> = vec![(0, default.clone())];
    let mut push = |first: u32, verdict: Verdict| {
        if ranges.last().is_some_and(|(_, last)| *last == verdict) {
            return;
        }
        if ranges.last().is_some_and(|(start, _)| *start == first) {
            ranges.pop();
        }
        ranges.push((first, verdict));
    };
    let limit = policy.above.map_or(u32::MAX, |(first, _)| first);
    for (&nr, verdict) in policy.syscalls.range(..limit) {
        push(nr, verdict.clone());
        if let Some(next) = nr.checked_add(1) {
            push(next, default.clone());
        }
    }
    if let Some((first, action)) = policy.above {
        push(first, Verdict::Always(action));
    }
    ranges
}

/// The binary search over `ranges`; the accumulator holds the syscall number.
fn search(ranges: &[(u32, Verdict)]) -> Vec<sock_filter> {
    if let [(_, verdict)] = ranges {
        return leaf(verdict);
    }
    let middle = ranges.len() / 2;
    let (left, right) = (search(&ranges[..middle]), search(&ranges[middle..]));
    let boundary = ranges[middle].0;
    let mut code = Vec::with_capacity(left.len() + right.len() + 2);
    match u8::try_from(left.len()) {
        // nr >= boundary: jump over the left subtree.
        Ok(skip) => code.push(insn(JMP_JGE_K, skip, 0, boundary)),
        Err(_) => {
            code.push(insn(JMP_JGE_K, 0, 1, boundary));
            code.push(insn(JMP_JA, 0, 0, left.len() as u32));
        }
    }
    code.extend(left);
    code.extend(right);
    code
}

fn leaf(verdict: &Verdict) -> Vec<sock_filter> {
    match verdict {
        Verdict::Always(action) => vec![insn(RET_K, 0, 0, action.ret())],
        Verdict::ArgSwitch { arg, cases, otherwise } => switch(*arg, None, cases, *otherwise),
        Verdict::ArgFieldSwitch { arg, mask, cases, otherwise } => switch(*arg, Some(*mask), cases, *otherwise),
        Verdict::ArgAnyBit { arg, mask, matched, otherwise } => vec![
            insn(LD_W_ABS, 0, 0, arg_low_offset(*arg)),
            insn(JMP_JSET_K, 1, 0, *mask),
            insn(RET_K, 0, 0, otherwise.ret()),
            insn(RET_K, 0, 0, matched.ret()),
        ],
    }
}

/// Loads the argument (masked, when a mask is given) and compares it with each case in turn.
fn switch(arg: u8, mask: Option<u32>, cases: &[(u32, Verdict)], otherwise: Action) -> Vec<sock_filter> {
    let mut code = vec![insn(LD_W_ABS, 0, 0, arg_low_offset(arg))];
    code.extend(mask.map(|mask| insn(ALU_AND_K, 0, 0, mask)));
    for (value, verdict) in cases {
        // Each case's code ends in a return, so a mismatch skips it with the (masked) argument
        // still in the accumulator.
        let case = leaf(verdict);
        let skip = u8::try_from(case.len()).expect("a case is a few instructions");
        code.push(insn(JMP_JEQ_K, 0, skip, *value));
        code.extend(case);
    }
    code.push(insn(RET_K, 0, 0, otherwise.ret()));
    code
}

/// A classic-BPF interpreter for the instructions above, to check programs in tests. Returns
/// the action and the number of instructions run.
#[cfg(test)]
pub fn run(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> (u32, usize) {
    let word = |offset: u32| -> u32 {
        match offset {
            OFFSET_NR => nr,
            OFFSET_ARCH => arch,
            o if o >= OFFSET_ARGS => {
                let i = ((o - OFFSET_ARGS) / 8) as usize;
                let high = (o - OFFSET_ARGS) % 8 == 4;
                if high == cfg!(target_endian = "little") { (args[i] >> 32) as u32 } else { args[i] as u32 }
            }
            other => panic!("load from unexpected offset {other}"),
        }
    };
    let (mut pc, mut acc, mut steps) = (0usize, 0u32, 0usize);
    loop {
        let i = program[pc];
        pc += 1;
        steps += 1;
        let jump = |taken: bool| usize::from(if taken { i.jt } else { i.jf });
        match i.code {
            LD_W_ABS => acc = word(i.k),
            JMP_JA => pc += i.k as usize,
            JMP_JEQ_K => pc += jump(acc == i.k),
            JMP_JGE_K => pc += jump(acc >= i.k),
            JMP_JSET_K => pc += jump(acc & i.k != 0),
            ALU_AND_K => acc &= i.k,
            RET_K => return (i.k, steps),
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCH: u32 = 0xc000_003e;

    fn policy(syscalls: BTreeMap<u32, Verdict>) -> Policy {
        Policy {
            arch: ARCH,
            foreign_arch: Action::KillProcess,
            above: Some((0x4000_0000, Action::Errno(38))),
            syscalls,
            default: Action::Errno(38),
        }
    }

    #[test]
    fn every_number_gets_its_verdict() {
        // Many alternating ranges, so subtrees outgrow 8-bit jumps.
        let syscalls: BTreeMap<u32, Verdict> = (0..1500)
            .filter(|n| n % 3 != 2)
            .map(|n| (n, Verdict::Always(if n % 3 == 0 { Action::Allow } else { Action::Errno(1) })))
            .collect();
        let p = policy(syscalls.clone());
        let program = compile(&p).unwrap();
        assert!(program.iter().any(|i| i.code == JMP_JA), "the test must exercise long jumps");
        for nr in (0..1600).chain([0x4000_0000, 0x4000_0027, u32::MAX]) {
            let expected = match syscalls.get(&nr) {
                Some(Verdict::Always(a)) if nr < 0x4000_0000 => a.ret(),
                _ => Action::Errno(38).ret(),
            };
            assert_eq!(run(&program, ARCH, nr, [0; 6]).0, expected, "syscall {nr}");
        }
        assert_eq!(run(&program, 0x4000_0003, 0, [0; 6]).0, RET_KILL_PROCESS, "foreign architecture");
    }

    #[test]
    fn argument_checks_use_the_low_32_bits() {
        let mut syscalls = BTreeMap::new();
        syscalls.insert(
            16,
            Verdict::ArgSwitch {
                arg: 1,
                cases: vec![(0x5412, Verdict::Always(Action::Errno(1))), (0x541C, Verdict::Always(Action::Errno(1)))],
                otherwise: Action::Allow,
            },
        );
        syscalls.insert(
            56,
            Verdict::ArgAnyBit { arg: 0, mask: 0x7E02_0000, matched: Action::Errno(1), otherwise: Action::Allow },
        );
        let program = compile(&policy(syscalls)).unwrap();
        let eperm = Action::Errno(1).ret();
        assert_eq!(run(&program, ARCH, 16, [0, 0x5412, 0, 0, 0, 0]).0, eperm);
        assert_eq!(run(&program, ARCH, 16, [0, 0xFFFF_FFFF_0000_5412, 0, 0, 0, 0]).0, eperm);
        assert_eq!(run(&program, ARCH, 16, [0, 0x541C, 0, 0, 0, 0]).0, eperm);
        assert_eq!(run(&program, ARCH, 16, [0, 0x5401, 0, 0, 0, 0]).0, RET_ALLOW);
        assert_eq!(run(&program, ARCH, 56, [0x0002_0011, 0, 0, 0, 0, 0]).0, eperm, "CLONE_NEWNS");
        assert_eq!(run(&program, ARCH, 56, [0x003d_0f00, 0, 0, 0, 0, 0]).0, RET_ALLOW, "thread flags");
        assert_eq!(run(&program, ARCH, 17, [0; 6]).0, Action::Errno(38).ret());
    }

    #[test]
    fn a_case_can_check_another_argument() {
        let netlink_route_only = Verdict::ArgSwitch {
            arg: 2,
            cases: vec![(0, Verdict::Always(Action::Allow))],
            otherwise: Action::Errno(93),
        };
        let mut syscalls = BTreeMap::new();
        syscalls.insert(
            41,
            Verdict::ArgSwitch {
                arg: 0,
                cases: vec![(2, Verdict::Always(Action::Allow)), (16, netlink_route_only)],
                otherwise: Action::Errno(97),
            },
        );
        let program = compile(&policy(syscalls)).unwrap();
        assert_eq!(run(&program, ARCH, 41, [2, 3, 1, 0, 0, 0]).0, RET_ALLOW, "AF_INET, any protocol");
        assert_eq!(run(&program, ARCH, 41, [16, 3, 0, 0, 0, 0]).0, RET_ALLOW, "NETLINK_ROUTE");
        assert_eq!(run(&program, ARCH, 41, [16, 3, 15, 0, 0, 0]).0, Action::Errno(93).ret(), "uevents");
        assert_eq!(run(&program, ARCH, 41, [16, 3, 1 << 32, 0, 0, 0]).0, RET_ALLOW, "low 32 bits only");
        assert_eq!(run(&program, ARCH, 41, [1, 1, 0, 0, 0, 0]).0, Action::Errno(97).ret(), "AF_UNIX");
    }

    #[test]
    fn a_field_of_a_flags_word_can_decide() {
        // mmap: flags & (MAP_TYPE | MAP_ANONYMOUS) == MAP_SHARED | MAP_ANONYMOUS is refused.
        let mut syscalls = BTreeMap::new();
        syscalls.insert(
            9,
            Verdict::ArgFieldSwitch {
                arg: 3,
                mask: 0x2f,
                cases: vec![(0x21, Verdict::Always(Action::Errno(1)))],
                otherwise: Action::Allow,
            },
        );
        let program = compile(&policy(syscalls)).unwrap();
        assert_eq!(run(&program, ARCH, 9, [0, 4096, 3, 0x21, 0, 0]).0, Action::Errno(1).ret(), "shared anonymous");
        assert_eq!(run(&program, ARCH, 9, [0, 4096, 3, 0x4021, 0, 0]).0, Action::Errno(1).ret(), "other flags too");
        assert_eq!(run(&program, ARCH, 9, [0, 4096, 3, 0x22, 0, 0]).0, RET_ALLOW, "private anonymous");
        assert_eq!(run(&program, ARCH, 9, [0, 4096, 3, 0x01, 3, 0]).0, RET_ALLOW, "shared file");
    }

    #[test]
    fn overlong_programs_are_refused() {
        let syscalls = (0..3000).map(|n| (n * 2, Verdict::Always(Action::Allow))).collect();
        assert!(matches!(compile(&policy(syscalls)), Err(BpfError::TooLong(_))));
    }
}
