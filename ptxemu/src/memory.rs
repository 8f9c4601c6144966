//! Global memory: allocations in one flat device address space, with gaps so overruns fault.

use crate::error::{Error, Result};

/// Where generic addresses of the running CTA's shared memory begin (`cvta.shared` adds this).
pub const SHARED_WINDOW: u64 = 0xF000_0000_0000;

/// Where generic addresses of the kernel's parameters begin (`cvta.param` adds this), so a
/// `.param` object such as a tensor map can be named by a generic address.
pub const PARAM_WINDOW: u64 = 0xE000_0000_0000;

/// The first allocation's address; nothing below it is mapped, so small integers used as pointers fault.
const GLOBAL_BASE: u64 = 0x1_0000_0000;

/// Unmapped bytes after each allocation: an overrun faults instead of reaching the next buffer.
const GUARD: u64 = 4096;

#[derive(Debug, Clone)]
struct Allocation {
    base: u64,
    data: Vec<u8>,
}

/// Device global memory.
#[derive(Debug, Clone)]
pub struct Memory {
    allocs: Vec<Allocation>,
    next: u64,
}

impl Default for Memory {
    fn default() -> Self {
        Memory::new()
    }
}

impl Memory {
    /// Empty memory.
    pub fn new() -> Memory {
        Memory {
            allocs: Vec::new(),
            next: GLOBAL_BASE,
        }
    }

    /// Allocates `bytes` zeroed bytes; the address is 256-byte aligned and never 0.
    pub fn alloc(&mut self, bytes: usize) -> u64 {
        let base = self.next;
        self.next = (base + bytes as u64 + GUARD).next_multiple_of(256);
        self.allocs.push(Allocation {
            base,
            data: vec![0; bytes],
        });
        base
    }

    fn find(&self, addr: u64, len: u64) -> Option<(usize, usize)> {
        let i = self
            .allocs
            .partition_point(|a| a.base <= addr)
            .checked_sub(1)?;
        let a = &self.allocs[i];
        let start = addr - a.base;
        (start.checked_add(len)? <= a.data.len() as u64).then_some((i, start as usize))
    }

    /// The bytes `[addr, addr+len)` if one allocation holds them all.
    pub(crate) fn slice(&self, addr: u64, len: u64) -> Option<&[u8]> {
        let (i, start) = self.find(addr, len)?;
        Some(&self.allocs[i].data[start..start + len as usize])
    }

    /// Mutable form of [`Memory::slice`].
    pub(crate) fn slice_mut(&mut self, addr: u64, len: u64) -> Option<&mut [u8]> {
        let (i, start) = self.find(addr, len)?;
        Some(&mut self.allocs[i].data[start..start + len as usize])
    }

    /// Copies host bytes to device memory.
    ///
    /// # Panics
    /// If the range is not inside one allocation: that is a bug in the test driving the emulator.
    pub fn write(&mut self, addr: u64, bytes: &[u8]) {
        match self.slice_mut(addr, bytes.len() as u64) {
            Some(dst) => dst.copy_from_slice(bytes),
            None => panic!(
                "{}",
                Error::HostFault {
                    addr,
                    len: bytes.len() as u64
                }
            ),
        }
    }

    /// Copies device bytes to the host.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>> {
        self.slice(addr, len as u64)
            .map(<[u8]>::to_vec)
            .ok_or(Error::HostFault {
                addr,
                len: len as u64,
            })
    }

    /// Writes f32 values (little-endian). Panics like [`Memory::write`].
    pub fn write_f32s(&mut self, addr: u64, values: &[f32]) {
        self.write_words(addr, values.iter().map(|v| v.to_le_bytes()));
    }

    /// Reads `n` f32 values.
    pub fn read_f32s(&self, addr: u64, n: usize) -> Result<Vec<f32>> {
        Ok(self
            .read_words(addr, n)?
            .into_iter()
            .map(f32::from_le_bytes)
            .collect())
    }

    /// Writes 16-bit values (the bits of f16 or bf16 numbers). Panics like [`Memory::write`].
    pub fn write_u16s(&mut self, addr: u64, values: &[u16]) {
        self.write_words(addr, values.iter().map(|v| v.to_le_bytes()));
    }

    /// Reads `n` 16-bit values.
    pub fn read_u16s(&self, addr: u64, n: usize) -> Result<Vec<u16>> {
        Ok(self
            .read_words(addr, n)?
            .into_iter()
            .map(u16::from_le_bytes)
            .collect())
    }

    /// Writes u32 values. Panics like [`Memory::write`].
    pub fn write_u32s(&mut self, addr: u64, values: &[u32]) {
        self.write_words(addr, values.iter().map(|v| v.to_le_bytes()));
    }

    /// Reads `n` u32 values.
    pub fn read_u32s(&self, addr: u64, n: usize) -> Result<Vec<u32>> {
        Ok(self
            .read_words(addr, n)?
            .into_iter()
            .map(u32::from_le_bytes)
            .collect())
    }

    fn write_words<const N: usize>(&mut self, addr: u64, words: impl Iterator<Item = [u8; N]>) {
        let bytes: Vec<u8> = words.flatten().collect();
        self.write(addr, &bytes);
    }

    fn read_words<const N: usize>(&self, addr: u64, n: usize) -> Result<Vec<[u8; N]>> {
        let bytes = self.slice(addr, (n * N) as u64).ok_or(Error::HostFault {
            addr,
            len: (n * N) as u64,
        })?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| std::array::from_fn(|i| c[i]))
            .collect())
    }
}
