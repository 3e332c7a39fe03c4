//! eBPF instructions and a small assembler.
//!
//! The XDP program is assembled here, in Rust, the way `dataplane/src/quic/steer.rs`
//! assembles its classic BPF: no clang, no bpf-linker, no object file, so the crate builds
//! from crates alone on a fresh machine. [`Asm`] reads like assembly and resolves jumps to
//! [`Label`]s (forward or backward) when the program is finished.

use crate::error::{Error, Result};

/// An eBPF register. R0 holds return values, R1-R5 are helper arguments (clobbered by
/// calls), R6-R9 survive calls, R10 is the read-only frame pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
}

/// Width of a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// 1 byte.
    B,
    /// 2 bytes.
    H,
    /// 4 bytes.
    W,
    /// 8 bytes.
    DW,
}

/// Arithmetic operations (the `BPF_OP` bits of an ALU instruction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Alu {
    Add = 0x00,
    Sub = 0x10,
    Mul = 0x20,
    Div = 0x30,
    Or = 0x40,
    And = 0x50,
    Lsh = 0x60,
    Rsh = 0x70,
    Mod = 0x90,
    Xor = 0xa0,
    Mov = 0xb0,
    Arsh = 0xc0,
}

/// Conditional jump operations (unsigned unless named signed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Cond {
    Eq = 0x10,
    Gt = 0x20,
    Ge = 0x30,
    Set = 0x40,
    Ne = 0x50,
    Sgt = 0x60,
    Sge = 0x70,
    Lt = 0xa0,
    Le = 0xb0,
    Slt = 0xc0,
    Sle = 0xd0,
}

/// Opcode bits, as in linux/bpf.h and linux/bpf_common.h.
pub mod op {
    /// Class: load immediate (only the 16-byte `LD_IMM64` is valid in eBPF).
    pub const LD: u8 = 0x00;
    /// Class: load from memory into a register.
    pub const LDX: u8 = 0x01;
    /// Class: store an immediate.
    pub const ST: u8 = 0x02;
    /// Class: store a register.
    pub const STX: u8 = 0x03;
    /// Class: 32-bit arithmetic.
    pub const ALU: u8 = 0x04;
    /// Class: 64-bit jumps, calls, exit.
    pub const JMP: u8 = 0x05;
    /// Class: jumps comparing the low 32 bits.
    pub const JMP32: u8 = 0x06;
    /// Class: 64-bit arithmetic.
    pub const ALU64: u8 = 0x07;
    /// Mode: immediate.
    pub const IMM: u8 = 0x00;
    /// Mode: memory at register + offset.
    pub const MEM: u8 = 0x60;
    /// Source: the immediate.
    pub const K: u8 = 0x00;
    /// Source: the source register.
    pub const X: u8 = 0x08;
    /// Byte-swap (with class ALU).
    pub const END: u8 = 0xd0;
    /// To big endian (with `END`).
    pub const TO_BE: u8 = 0x08;
    /// Unconditional jump.
    pub const JA: u8 = 0x00;
    /// Helper call.
    pub const CALL: u8 = 0x80;
    /// Return R0.
    pub const EXIT: u8 = 0x90;
    /// `src_reg` of an `LD_IMM64` whose immediate is a map's file descriptor.
    pub const PSEUDO_MAP_FD: u8 = 1;
}

impl Size {
    fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::DW => 0x18,
        }
    }
}

/// One 8-byte eBPF instruction, laid out as the kernel's `struct bpf_insn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Insn {
    /// Opcode: class | size/op | mode/source.
    pub code: u8,
    /// `dst_reg:4, src_reg:4` bit fields, in the host's bit-field order.
    regs: u8,
    /// Signed offset (memory access, jump distance).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

impl Insn {
    /// An instruction from its fields.
    pub const fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Self {
        Self::raw(code, dst as u8, src as u8, off, imm)
    }

    /// An instruction with raw register numbers (for pseudo sources such as map loads).
    pub const fn raw(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        // The C bit fields `dst_reg:4, src_reg:4` fill a byte from its low bits on
        // little-endian ABIs and from its high bits on big-endian ones.
        #[cfg(target_endian = "little")]
        let regs = (dst & 0x0f) | (src << 4);
        #[cfg(target_endian = "big")]
        let regs = (dst << 4) | (src & 0x0f);
        Insn {
            code,
            regs,
            off,
            imm,
        }
    }

    /// The destination register number.
    pub fn dst(&self) -> u8 {
        #[cfg(target_endian = "little")]
        return self.regs & 0x0f;
        #[cfg(target_endian = "big")]
        return self.regs >> 4;
    }

    /// The source register number.
    pub fn src(&self) -> u8 {
        #[cfg(target_endian = "little")]
        return self.regs >> 4;
        #[cfg(target_endian = "big")]
        return self.regs & 0x0f;
    }

    /// The 8 bytes the kernel reads, in host byte order.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = self.regs;
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        b
    }
}

/// A jump target, bound to a position with [`Asm::bind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// Builds a program instruction by instruction; jumps name [`Label`]s whose distances are
/// filled in by [`Asm::finish`].
#[derive(Default, Debug)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    /// An empty program.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new, not yet bound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `label` to the next instruction emitted.
    pub fn bind(&mut self, label: Label) {
        self.labels[label.0] = Some(self.insns.len());
    }

    /// Whether any jump emitted so far targets `label` (the verifier refuses unreachable
    /// instructions, so a block only some programs jump to is emitted only when used).
    pub fn is_referenced(&self, label: Label) -> bool {
        self.fixups.iter().any(|&(_, l)| l == label)
    }

    /// Emits one instruction as is.
    pub fn emit(&mut self, insn: Insn) -> &mut Self {
        self.insns.push(insn);
        self
    }

    /// `dst = imm` (64-bit, the immediate sign-extended).
    pub fn mov64_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.alu64_imm(Alu::Mov, dst, imm)
    }

    /// `dst = src` (64-bit).
    pub fn mov64_reg(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.alu64_reg(Alu::Mov, dst, src)
    }

    /// `dst op= imm` (64-bit).
    pub fn alu64_imm(&mut self, alu: Alu, dst: Reg, imm: i32) -> &mut Self {
        self.emit(Insn::new(
            op::ALU64 | alu as u8 | op::K,
            dst,
            Reg::R0,
            0,
            imm,
        ))
    }

    /// `dst op= src` (64-bit).
    pub fn alu64_reg(&mut self, alu: Alu, dst: Reg, src: Reg) -> &mut Self {
        self.emit(Insn::new(op::ALU64 | alu as u8 | op::X, dst, src, 0, 0))
    }

    /// `dst op= imm` on the low 32 bits, the upper 32 zeroed.
    pub fn alu32_imm(&mut self, alu: Alu, dst: Reg, imm: i32) -> &mut Self {
        self.emit(Insn::new(op::ALU | alu as u8 | op::K, dst, Reg::R0, 0, imm))
    }

    /// `dst = be16(dst)`: network to host order on a little-endian host (a zero-extension
    /// on a big-endian one), so 16-bit header fields compare against plain constants.
    pub fn be16(&mut self, dst: Reg) -> &mut Self {
        self.emit(Insn::new(
            op::ALU | op::END | op::TO_BE,
            dst,
            Reg::R0,
            0,
            16,
        ))
    }

    /// `dst = *(size *)(src + off)`.
    pub fn ldx(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.emit(Insn::new(op::LDX | op::MEM | size.bits(), dst, src, off, 0))
    }

    /// `*(size *)(dst + off) = src`.
    pub fn stx(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.emit(Insn::new(op::STX | op::MEM | size.bits(), dst, src, off, 0))
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn st_imm(&mut self, size: Size, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.emit(Insn::new(
            op::ST | op::MEM | size.bits(),
            dst,
            Reg::R0,
            off,
            imm,
        ))
    }

    /// `dst = imm64` (two instruction slots).
    pub fn ld_imm64(&mut self, dst: Reg, imm: u64) -> &mut Self {
        self.ld_imm64_raw(dst, 0, imm)
    }

    /// `dst = &map` for the map whose file descriptor is `fd`: the kernel replaces the
    /// descriptor with the map's address when it loads the program.
    pub fn ld_map_fd(&mut self, dst: Reg, fd: i32) -> &mut Self {
        self.ld_imm64_raw(dst, op::PSEUDO_MAP_FD, fd as u32 as u64)
    }

    fn ld_imm64_raw(&mut self, dst: Reg, src: u8, imm: u64) -> &mut Self {
        let code = op::LD | op::IMM | Size::DW.bits();
        self.emit(Insn::raw(code, dst as u8, src, 0, imm as u32 as i32));
        self.emit(Insn::raw(0, 0, 0, 0, (imm >> 32) as u32 as i32))
    }

    /// `if dst cond imm goto target` comparing all 64 bits (imm sign-extended).
    pub fn jmp_imm(&mut self, cond: Cond, dst: Reg, imm: i32, target: Label) -> &mut Self {
        self.jump(op::JMP | cond as u8 | op::K, dst, Reg::R0, imm, target)
    }

    /// `if (u32)dst cond (u32)imm goto target`: for 32-bit header words, whose high bit a
    /// 64-bit compare against a sign-extended immediate would get wrong.
    pub fn jmp32_imm(&mut self, cond: Cond, dst: Reg, imm: i32, target: Label) -> &mut Self {
        self.jump(op::JMP32 | cond as u8 | op::K, dst, Reg::R0, imm, target)
    }

    /// `if dst cond src goto target` (64-bit).
    pub fn jmp_reg(&mut self, cond: Cond, dst: Reg, src: Reg, target: Label) -> &mut Self {
        self.jump(op::JMP | cond as u8 | op::X, dst, src, 0, target)
    }

    /// `goto target`.
    pub fn ja(&mut self, target: Label) -> &mut Self {
        self.jump(op::JMP | op::JA, Reg::R0, Reg::R0, 0, target)
    }

    fn jump(&mut self, code: u8, dst: Reg, src: Reg, imm: i32, target: Label) -> &mut Self {
        self.fixups.push((self.insns.len(), target));
        self.emit(Insn::new(code, dst, src, 0, imm))
    }

    /// Calls helper number `helper` (arguments in R1-R5, result in R0).
    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.emit(Insn::new(op::JMP | op::CALL, Reg::R0, Reg::R0, 0, helper))
    }

    /// Returns R0.
    pub fn exit(&mut self) -> &mut Self {
        self.emit(Insn::new(op::JMP | op::EXIT, Reg::R0, Reg::R0, 0, 0))
    }

    /// Number of instruction slots emitted so far.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// True before the first instruction.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// Resolves every jump to its label: fails on a label never bound or a distance that
    /// does not fit the 16-bit offset.
    pub fn finish(mut self) -> Result<Vec<Insn>> {
        for &(at, label) in &self.fixups {
            let target = self.labels[label.0]
                .ok_or_else(|| Error::Invalid(format!("label {} is never bound", label.0)))?;
            let distance = target as i64 - (at as i64 + 1);
            self.insns[at].off = i16::try_from(distance).map_err(|_| {
                Error::Invalid(format!("jump from {at} to {target} does not fit 16 bits"))
            })?;
        }
        Ok(self.insns)
    }
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    fn bytes(insns: &[Insn]) -> Vec<u8> {
        insns.iter().flat_map(|i| i.to_bytes()).collect()
    }

    /// Encodings checked against the bytes clang/llvm-objdump emit for the same
    /// instructions (the kernel's `BPF_*` macros give the same).
    #[test]
    fn encodings_match_known_bytes() {
        let mut a = Asm::new();
        a.mov64_imm(Reg::R0, 2);
        a.mov64_reg(Reg::R6, Reg::R1);
        a.ldx(Size::W, Reg::R2, Reg::R1, 0);
        a.ldx(Size::W, Reg::R3, Reg::R1, 4);
        a.ldx(Size::H, Reg::R5, Reg::R2, 12);
        a.ldx(Size::B, Reg::R4, Reg::R8, 9);
        a.ldx(Size::DW, Reg::R1, Reg::R0, 0);
        a.stx(Size::W, Reg::R10, -4, Reg::R7);
        a.stx(Size::DW, Reg::R0, 0, Reg::R1);
        a.st_imm(Size::W, Reg::R10, -8, 7);
        a.alu64_imm(Alu::Add, Reg::R2, -4);
        a.alu64_imm(Alu::And, Reg::R4, 0x0f);
        a.alu64_imm(Alu::Lsh, Reg::R4, 2);
        a.alu64_reg(Alu::Add, Reg::R9, Reg::R4);
        a.be16(Reg::R5);
        a.call(1);
        a.call(51);
        a.exit();
        assert_eq!(
            bytes(&a.finish().unwrap()),
            [
                0xb7, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // r0 = 2
                0xbf, 0x16, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // r6 = r1
                0x61, 0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // r2 = *(u32 *)(r1 + 0)
                0x61, 0x13, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, // r3 = *(u32 *)(r1 + 4)
                0x69, 0x25, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, // r5 = *(u16 *)(r2 + 12)
                0x71, 0x84, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, // r4 = *(u8 *)(r8 + 9)
                0x79, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // r1 = *(u64 *)(r0 + 0)
                0x63, 0x7a, 0xfc, 0xff, 0x00, 0x00, 0x00, 0x00, // *(u32 *)(r10 - 4) = r7
                0x7b, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // *(u64 *)(r0 + 0) = r1
                0x62, 0x0a, 0xf8, 0xff, 0x07, 0x00, 0x00, 0x00, // *(u32 *)(r10 - 8) = 7
                0x07, 0x02, 0x00, 0x00, 0xfc, 0xff, 0xff, 0xff, // r2 += -4
                0x57, 0x04, 0x00, 0x00, 0x0f, 0x00, 0x00, 0x00, // r4 &= 15
                0x67, 0x04, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // r4 <<= 2
                0x0f, 0x49, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // r9 += r4
                0xdc, 0x05, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, // r5 = be16 r5
                0x85, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, // call 1
                0x85, 0x00, 0x00, 0x00, 0x33, 0x00, 0x00, 0x00, // call 51
                0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // exit
            ]
        );
    }

    #[test]
    fn ld_imm64_takes_two_slots_and_map_loads_are_pseudo() {
        let mut a = Asm::new();
        a.ld_map_fd(Reg::R1, 5);
        a.ld_imm64(Reg::R2, 0x1122_3344_5566_7788);
        assert_eq!(a.len(), 4);
        assert_eq!(
            bytes(&a.finish().unwrap()),
            [
                0x18, 0x11, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, // r1 = map fd 5
                0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
                0x18, 0x02, 0x00, 0x00, 0x88, 0x77, 0x66, 0x55, // r2 = 0x1122334455667788
                0x00, 0x00, 0x00, 0x00, 0x44, 0x33, 0x22, 0x11, //
            ]
        );
    }

    #[test]
    fn jumps_resolve_forward_and_backward() {
        let mut a = Asm::new();
        let (top, out) = (a.label(), a.label());
        a.bind(top);
        a.jmp_imm(Cond::Eq, Reg::R1, 0x800, out); // 0: +2
        a.jmp32_imm(Cond::Ne, Reg::R5, -1, out); // 1: +1
        a.ja(top); // 2: -3
        a.bind(out);
        a.jmp_reg(Cond::Gt, Reg::R4, Reg::R3, top); // 3: -4
        let p = a.finish().unwrap();
        assert_eq!(
            bytes(&p),
            [
                0x15, 0x01, 0x02, 0x00, 0x00, 0x08, 0x00, 0x00, // if r1 == 0x800 goto +2
                0x56, 0x05, 0x01, 0x00, 0xff, 0xff, 0xff, 0xff, // if w5 != -1 goto +1
                0x05, 0x00, 0xfd, 0xff, 0x00, 0x00, 0x00, 0x00, // goto -3
                0x2d, 0x34, 0xfc, 0xff, 0x00, 0x00, 0x00, 0x00, // if r4 > r3 goto -4
            ]
        );
        assert_eq!((p[3].dst(), p[3].src()), (4, 3));
    }

    #[test]
    fn an_unbound_label_is_an_error() {
        let mut a = Asm::new();
        let nowhere = a.label();
        a.ja(nowhere);
        assert!(a.finish().is_err());
    }
}
