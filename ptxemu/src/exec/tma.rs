//! `cp.async.bulk.tensor.Nd.shared::cluster.global.tile.mbarrier::complete_tx::bytes
//! [dst], [tensorMap, {c0, ..}], [bar]`: one TMA box copy (see [`crate::tma`] for the tensor map
//! and the box semantics). Like the other bulk copies it lands at once and completes the box's
//! bytes on the mbarrier at once.

use super::cta::{Cta, Space};
use crate::error::Result;
use crate::instr::{Base, Instr, Mod, Operand};
use crate::tma::{bad_map, TensorMap};
use crate::types::Type;

impl Cta<'_> {
    pub(super) fn cp_async_bulk_tensor(&mut self, ins: &Instr, t: usize) -> Result<()> {
        let dims = [Mod::D1, Mod::D2, Mod::D3, Mod::D4, Mod::D5].iter().position(|&m| ins.has(m));
        let to_shared = ins.has(Mod::SharedCluster) || ins.has(Mod::SharedCta);
        let (Some(rank), true, true, true) = (dims, to_shared, ins.has(Mod::Global), ins.has(Mod::CompleteTxBytes)) else {
            return Err(ins.unsupported());
        };
        let Operand::TensorCoords(base, coords) = ins.arg(1)? else {
            return Err(ins.unsupported());
        };
        if coords.len() != rank + 1 {
            return Err(ins.unsupported());
        }
        // the tensor map's generic address in a register (ptxas rejects a bare `.param` symbol)
        let Base::Reg(r) = base else {
            return Err(ins.unsupported());
        };
        let map_addr = self.reg(t, *r);
        let map = TensorMap::decode(self.load(Space::Generic, map_addr, 128, ins)?)
            .map_err(|m| bad_map(&ins.name, ins.line, m))?;
        if map.dims.len() != coords.len() {
            let msg = format!("a {}d copy through a rank-{} map", coords.len(), map.dims.len());
            return Err(bad_map(&ins.name, ins.line, msg));
        }
        let c: Vec<i64> = coords
            .iter()
            .map(|op| Ok(self.read(t, op, Type::S32, ins)? as u32 as i32 as i64))
            .collect::<Result<_>>()?;
        let dst = self.address(t, ins.arg(0)?, ins)?;
        if dst % 128 != 0 {
            return Err(bad_map(&ins.name, ins.line, format!("shared destination {dst:#x} is not 128-byte aligned")));
        }
        let eb = u64::from(map.element_bytes);
        for (src, offset) in map.box_elements(&c) {
            let bytes = match src {
                Some(a) => self.load(Space::Global, a, eb, ins)?.to_vec(),
                None => vec![0; eb as usize],
            };
            self.store(Space::Shared, map.swizzle.apply(dst + offset), &bytes, ins)?;
        }
        self.complete_tx(t, ins.arg(2)?, map.box_bytes(), ins)
    }
}
