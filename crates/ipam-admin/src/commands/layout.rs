//! `ipamctl layout`: how the store lays out its records, where its writers must agree (the
//! etcd store, shared by nodes that may run different builds), and the switch between layouts.
//!
//! A cluster whose records predate the compressed layout stays plain, which every build
//! reads, until the operator switches it once every node runs a build that reads compressed
//! records; switching back to plain (before going back to such a build) rewrites the
//! compressed records plain.

use super::output;
use crate::{CtlError, Outcome};
use clap::{Args, ValueEnum};
use ipam_core::{Datastore, Ipam, LayoutStatus, RecordLayout};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A layout, as the command line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutName {
    /// Every record as it is: readable by every build.
    Plain,
    /// Large records compressed: smaller writes; needs every node on a build that reads them.
    Compressed,
}

impl From<LayoutName> for RecordLayout {
    fn from(l: LayoutName) -> RecordLayout {
        match l {
            LayoutName::Plain => RecordLayout::Plain,
            LayoutName::Compressed => RecordLayout::Compressed,
        }
    }
}

/// Arguments of `layout`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct LayoutArgs {
    /// Write records in this layout from now on, and rewrite the stored ones into it.
    #[arg(long, value_enum)]
    pub set: Option<LayoutName>,
}

/// Runs `layout`.
pub fn run<S: Datastore>(ipam: &Ipam<S>, a: &LayoutArgs, json: bool) -> Result<Outcome, CtlError> {
    let status = match a.set {
        Some(l) => ipam.set_layout(l.into())?,
        None => match ipam.layout()? {
            Some(s) => s,
            None => {
                return Ok(output(
                    json,
                    "this store has a single record layout (nothing to choose)\n".into(),
                    json!({"layout": null}),
                ))
            }
        },
    };
    Ok(output(json, text(&status, a.set.is_some()), value(&status)))
}

fn name(s: &LayoutStatus) -> &'static str {
    s.layout
        .map_or("unknown to this build", RecordLayout::as_str)
}

fn text(s: &LayoutStatus, set: bool) -> String {
    let mut t = format!(
        "layout: {}\nrecords: {} plain, {} compressed, {} corrupt\n",
        name(s),
        s.plain,
        s.compressed,
        s.corrupt
    );
    if set {
        t += &format!("rewritten: {}\n", s.rewritten);
    }
    t
}

fn value(s: &LayoutStatus) -> serde_json::Value {
    json!({"layout": s.layout.map(RecordLayout::as_str), "plain": s.plain,
           "compressed": s.compressed, "corrupt": s.corrupt, "rewritten": s.rewritten})
}
