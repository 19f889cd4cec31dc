//! `ipamctl map`: a picture of a pool, one cell per block slot, coloured by node and shaded by
//! fill, so fragmentation and borrowing show at a glance. Written as SVG (`--svg FILE`) and
//! printed as text (one character per cell).
//!
//! Pools with more than [`MAX_CELLS`] block slots are drawn with several slots per cell.

use super::output;
use crate::{CtlError, Outcome};
use clap::Args;
use ipam_core::{Datastore, Ipam, Range};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Most cells drawn.
pub const MAX_CELLS: u128 = 16_384;
/// Cells per row.
pub const COLUMNS: u128 = 64;
const CELL: u128 = 12;

/// Arguments of `map`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct MapArgs {
    /// Pool name (default: the first pool).
    #[arg(long)]
    pub pool: Option<String>,
    /// Write the SVG picture to this file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<String>,
}

#[derive(Clone, Default)]
struct Cell {
    blocks: Vec<String>,
    node: Option<String>,
    used: u32,
    size: u32,
    borrowed: u32,
}

fn symbol(i: usize) -> char {
    const S: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    S.get(i).map_or('#', |&c| c as char)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Runs `map`.
pub fn run<S: Datastore>(ipam: &Ipam<S>, a: &MapArgs, json: bool) -> Result<Outcome, CtlError> {
    let pools = ipam.pools()?;
    let pool = match &a.pool {
        Some(n) => pools.iter().find(|p| p.name() == n),
        None => pools.first(),
    }
    .ok_or_else(|| CtlError::Usage("no such pool".into()))?
    .clone();
    let slots = pool.block_count();
    let per_cell = slots.div_ceil(MAX_CELLS).max(1);
    let ncells = slots.div_ceil(per_cell);
    let mut cells: BTreeMap<u128, Cell> = BTreeMap::new();
    let blocks = ipam.blocks(&Range::BlocksIn(pool.cidr()))?;
    for vb in &blocks {
        let b = &vb.value;
        let Some(slot) = pool.slot_of(&b.cidr) else {
            continue;
        };
        let c = cells.entry(slot / per_cell).or_default();
        c.blocks.push(b.cidr.to_string());
        c.used += b.used_count();
        c.size += b.size();
        c.borrowed += u32::try_from(
            b.used()
                .filter(|(_, al, _)| al.get(ipam_core::ATTR_NODE) != b.affinity.as_deref())
                .count(),
        )
        .unwrap_or(0);
        match (&c.node, &b.affinity) {
            (None, Some(n)) if c.blocks.len() == 1 => c.node = Some(n.to_string()),
            (Some(x), Some(n)) if **x != **n => c.node = Some("(several)".into()),
            _ => {}
        }
    }
    let mut nodes: Vec<String> = cells.values().filter_map(|c| c.node.clone()).collect();
    nodes.sort();
    nodes.dedup();
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let hue = |n: &str| (index.get(n).copied().unwrap_or(0) as f64 * 137.508) % 360.0;

    // Text: one character per cell.
    let mut text = format!(
        "pool {} ({}), {} block slots{}; '.' unclaimed, lowercase < 50% full, UPPERCASE >= 50%, '!' holds borrowed addresses\n",
        pool.name(),
        pool.cidr(),
        slots,
        if per_cell > 1 { format!(", {per_cell} per cell") } else { String::new() }
    );
    for row in 0..ncells.div_ceil(COLUMNS) {
        let mut line = String::new();
        for col in 0..COLUMNS {
            let i = row * COLUMNS + col;
            if i >= ncells {
                break;
            }
            line.push(match cells.get(&i) {
                None => '.',
                Some(c) if c.borrowed > 0 => '!',
                Some(c) => {
                    let s = c
                        .node
                        .as_deref()
                        .and_then(|n| index.get(n))
                        .map_or('?', |&i| symbol(i));
                    if c.size > 0 && c.used * 2 >= c.size {
                        s.to_ascii_uppercase()
                    } else {
                        s
                    }
                }
            });
        }
        text.push_str(&line);
        text.push('\n');
    }
    for (i, n) in nodes.iter().enumerate() {
        let _ = writeln!(text, "  {} {n}", symbol(i));
    }

    // SVG.
    let rows = ncells.div_ceil(COLUMNS);
    let legend_h = 16 * nodes.len() as u128 + 8;
    let (w, h) = (COLUMNS * CELL + 20, rows * CELL + 40 + legend_h);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<title>pool {} {}</title>\n<text x=\"10\" y=\"18\">pool {} ({}): {} blocks claimed of {}</text>\n",
        xml_escape(pool.name()), pool.cidr(), xml_escape(pool.name()), pool.cidr(), blocks.len(), slots
    );
    for i in 0..ncells {
        let (x, y) = (10 + (i % COLUMNS) * CELL, 28 + (i / COLUMNS) * CELL);
        let first = pool.block_at(i * per_cell);
        match cells.get(&i) {
            None => {
                let _ = writeln!(
                    svg,
                    "<rect class=\"block\" data-block=\"{first}\" data-node=\"\" x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"#eeeeee\"><title>{first} unclaimed</title></rect>",
                    CELL - 1, CELL - 1
                );
            }
            Some(c) => {
                let node = c.node.clone().unwrap_or_default();
                let fill = if c.size == 0 {
                    0.0
                } else {
                    f64::from(c.used) / f64::from(c.size)
                };
                let light = 85.0 - 50.0 * fill;
                let stroke = if c.borrowed > 0 {
                    " stroke=\"#d00\" stroke-width=\"2\""
                } else {
                    ""
                };
                let _ = writeln!(
                    svg,
                    "<rect class=\"block\" data-block=\"{}\" data-node=\"{}\" x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"hsl({:.0},65%,{light:.0}%)\"{stroke}><title>{} node {} {}/{} used, {} borrowed</title></rect>",
                    xml_escape(&c.blocks[0]), xml_escape(&node), CELL - 1, CELL - 1, hue(&node),
                    xml_escape(&c.blocks.join(" ")), xml_escape(&node), c.used, c.size, c.borrowed
                );
            }
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let y = rows * CELL + 44 + 16 * i as u128;
        let _ = writeln!(
            svg,
            "<rect x=\"10\" y=\"{}\" width=\"11\" height=\"11\" fill=\"hsl({:.0},65%,45%)\"/><text x=\"26\" y=\"{}\">{}</text>",
            y - 10, hue(n), y, xml_escape(n)
        );
    }
    svg.push_str("</svg>\n");

    let mut o = output(
        json,
        text,
        json!({"pool": pool.name(), "cidr": pool.cidr().to_string(), "slots": slots.to_string(), "slots_per_cell": per_cell.to_string(),
               "cells": cells.iter().map(|(i, c)| json!({"cell": i.to_string(), "blocks": c.blocks, "node": c.node,
                   "used": c.used, "size": c.size, "borrowed": c.borrowed})).collect::<Vec<_>>()}),
    );
    if let Some(path) = &a.svg {
        o.files.push((path.clone(), svg));
    }
    Ok(o)
}
