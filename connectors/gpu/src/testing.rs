//! Test support (feature `test-util`): a fake `nvidia-smi` for behaviour tests, here and in
//! the engine's own tests, and multi-GPU documents made of the real captures in
//! `tests/data/nvidia-smi`.
//!
//! The fake is a small shell script written into a temporary directory and named by the
//! `nvidia_smi` setting. It appends every argument list to `calls.log` and replays files
//! from its directory:
//! - `-q -x`: `query.xml`, a document combined from real captures ([`combine`]);
//! - `--query-gpu=F1,F2 --format=csv,noheader,nounits`: the columns F1, F2 of
//!   `query-gpu.N.tsv`, N counting the calls (the last file is repeated), joined with
//!   `, ` as nvidia-smi prints them. An unknown field gets nvidia-smi's
//!   `Field "X" is not a valid field to query.` and exit 2. The tables are made by
//!   [`gpu_table`] from the same parsed document, so they agree with the XML (values
//!   nvidia-smi would print; crafted, not captured);
//! - `--query-compute-apps=...`: the same from `query-compute-apps.N.tsv`;
//! - `topo -m`: `topo.txt`; `-r -i N`: appended to `resets.log`, answered like
//!   nvidia-smi; `mig ...`: `mig-lgi.txt`, `mig-lgip.txt`, `mig-create.txt`, and
//!   "Successfully destroyed" lines for `-dci`/`-dgi`;
//! - with `fail.rc` present, every call prints `fail.out` and exits with that status.
#![allow(clippy::missing_panics_doc)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::smi::{parse_query_xml, SmiReport};
use engine_connector::harness::Harness;
use serde_json::json;

const SCRIPT: &str = r#"#!/bin/sh
# Fake nvidia-smi for connector-gpu's tests: replays the files beside it.
d=$(cd "$(dirname "$0")" && pwd)
printf '%s\n' "$*" >> "$d/calls.log"
if [ -f "$d/fail.rc" ]; then
    cat "$d/fail.out" 2>/dev/null
    exit "$(cat "$d/fail.rc")"
fi
table() {
    kind=$1; fields=$2
    n=$(( $(cat "$d/$kind.count" 2>/dev/null || echo 0) + 1 ))
    echo "$n" > "$d/$kind.count"
    f="$d/$kind.$n.tsv"
    [ -f "$f" ] || f=$(ls "$d"/"$kind".*.tsv 2>/dev/null | sort -V | tail -n 1)
    [ -n "$f" ] || exit 0
    awk -F '\t' -v want="$fields" '
        BEGIN { nf = split(want, w, ",") }
        NR == 1 {
            for (i = 1; i <= NF; i++) col[$i] = i
            for (j = 1; j <= nf; j++) if (!(w[j] in col)) { printf "Field \"%s\" is not a valid field to query.\n", w[j]; exit 2 }
            next
        }
        { line = ""; for (j = 1; j <= nf; j++) line = (j == 1 ? "" : line ", ") $(col[w[j]]); print line }
    ' "$f"
}
case "$1" in
    -q) cat "$d/query.xml" ;;
    --query-gpu=*) table query-gpu "${1#*=}" ;;
    --query-compute-apps=*) table query-compute-apps "${1#*=}" ;;
    topo) cat "$d/topo.txt" ;;
    -r)
        printf '%s\n' "$*" >> "$d/resets.log"
        echo "GPU 00000000:$3:00.0 was successfully reset."
        echo "All done."
        ;;
    -i)
        if [ "$3" = "-mig" ]; then
            printf '%s\n' "$*" >> "$d/mig.log"
            if [ "$4" = 1 ]; then echo "Enabled MIG Mode for GPU 00000000:01:00.0"; else echo "Disabled MIG Mode for GPU 00000000:01:00.0"; fi
            echo "All done."
        fi
        ;;
    mig)
        printf '%s\n' "$*" >> "$d/mig.log"
        case "$*" in
            *-lgip*) cat "$d/mig-lgip.txt" ;;
            *-lgi*) cat "$d/mig-lgi.txt" ;;
            *-cgi*) cat "$d/mig-create.txt" ;;
            *-dci*) gi=$(echo "$*" | sed -n 's/.*-gi \([0-9]*\).*/\1/p'); echo "Successfully destroyed compute instance ID  0 from GPU  $3 GPU instance ID  $gi" ;;
            *-dgi*) gi=$(echo "$*" | sed -n 's/.*-gi \([0-9]*\).*/\1/p'); echo "Successfully destroyed GPU instance ID  $gi from GPU  $3" ;;
        esac
        ;;
    *) echo "fake nvidia-smi: unexpected arguments: $*"; exit 2 ;;
esac
"#;

/// The crate's copy of the real captures.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// A real capture.
pub fn capture(name: &str) -> String {
    let path = data_dir().join("nvidia-smi").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// One `nvidia_smi_log` holding the first `<gpu>` of each capture, in order, with the
/// header (driver, CUDA) of the first. `uuid_suffix` makes copies of the same capture
/// distinct: the UUID's last two hex digits and the PCI bus are replaced.
pub fn combine(parts: &[(&str, Option<u8>)]) -> String {
    let mut gpus = Vec::new();
    let mut header = String::new();
    for (n, (name, suffix)) in parts.iter().enumerate() {
        let text = capture(name);
        let doc = roxmltree::Document::parse_with_options(&text, roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() }).unwrap();
        let root = doc.root_element();
        if n == 0 {
            for tag in ["timestamp", "driver_version", "cuda_version"] {
                if let Some(node) = root.children().find(|c| c.has_tag_name(tag)) {
                    header.push_str(&text[node.range()]);
                    header.push('\n');
                }
            }
        }
        let gpu = root.children().find(|c| c.has_tag_name("gpu")).unwrap();
        let mut body = text[gpu.range()].to_string();
        if let Some(s) = suffix {
            let uuid = gpu.descendants().find(|c| c.has_tag_name("uuid")).and_then(|c| c.text()).unwrap().trim().to_string();
            let new_uuid = format!("{}{s:02x}", &uuid[..uuid.len() - 2]);
            body = body.replace(&uuid, &new_uuid);
            let bus = gpu.attribute("id").unwrap().to_string();
            let new_bus = format!("00000000:{s:02X}:00.0");
            body = body.replace(&bus, &new_bus);
        }
        gpus.push(body);
    }
    format!(
        "<?xml version=\"1.0\" ?>\n<!DOCTYPE nvidia_smi_log SYSTEM \"nvsmi_device_v12.dtd\">\n<nvidia_smi_log>\n{header}<attached_gpus>{}</attached_gpus>\n{}\n</nvidia_smi_log>\n",
        gpus.len(),
        gpus.join("\n")
    )
}

/// The four-GPU machine most tests use: an A10G (idle), a Tesla T4 (a python compute
/// process), an RTX 3090 (idle, largest free memory) and an A100 in MIG mode.
pub fn four_gpus() -> String {
    combine(&[("a10g.xml", None), ("tesla-t4.xml", None), ("rtx-3090-v12.xml", None), ("a100-sxm4-v12.xml", None)])
}

/// `--query-gpu` rows for `report`, as nvidia-smi would print them with `nounits`.
pub fn gpu_table(report: &SmiReport) -> Vec<BTreeMap<String, String>> {
    let na = || "[N/A]".to_string();
    let s = |v: Option<String>| v.unwrap_or_else(na);
    report
        .gpus
        .iter()
        .map(|g| {
            let mut m = BTreeMap::new();
            m.insert("index".into(), g.index.to_string());
            m.insert("uuid".into(), s(g.uuid.clone()));
            m.insert("name".into(), s(g.product_name.clone()));
            m.insert("pci.bus_id".into(), s(g.pci_bus_id.clone()));
            m.insert("memory.total".into(), s(g.fb_memory.total_mib.map(|v| v.to_string())));
            m.insert("memory.used".into(), s(g.fb_memory.used_mib.map(|v| v.to_string())));
            m.insert("memory.free".into(), s(g.fb_memory.free_mib.map(|v| v.to_string())));
            m.insert("utilization.gpu".into(), s(g.utilization.gpu_percent.map(|v| v.to_string())));
            m.insert("utilization.memory".into(), s(g.utilization.memory_percent.map(|v| v.to_string())));
            m.insert("temperature.gpu".into(), s(g.temperature.gpu_c.map(|v| v.to_string())));
            m.insert("power.draw".into(), s(g.power.draw_w.map(|v| format!("{v:.2}"))));
            m.insert("power.limit".into(), s(g.power.limit_w.map(|v| format!("{v:.2}"))));
            m.insert("clocks.sm".into(), s(g.clocks.sm_mhz.map(|v| v.to_string())));
            m.insert("driver_version".into(), s(report.driver_version.clone()));
            m.insert("compute_cap".into(), "8.6".into());
            m.insert("clocks_event_reasons.active".into(), "0x0000000000000001".into());
            m
        })
        .collect()
}

/// A fake nvidia-smi in its own directory, with a ledger directory beside it.
pub struct FakeSmi {
    pub dir: tempfile::TempDir,
}

impl FakeSmi {
    /// A fake that answers `-q -x` with `xml` and `--query-gpu` with [`gpu_table`].
    pub fn new(xml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        script(&dir.path().join("nvidia-smi"), SCRIPT);
        let fake = Self { dir };
        fake.write("query.xml", xml);
        let report = parse_query_xml(xml).unwrap();
        fake.query_gpu(1, &gpu_table(&report));
        fake.compute_apps(1, &[]);
        fake
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("nvidia-smi")
    }

    pub fn ledger_dir(&self) -> PathBuf {
        self.dir.path().join("ledger")
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn table(&self, file: &str, rows: &[BTreeMap<String, String>], default_header: &[&str]) {
        let header: Vec<String> = rows.first().map_or_else(|| default_header.iter().map(|s| (*s).to_string()).collect(), |r| r.keys().cloned().collect());
        let mut text = header.join("\t");
        text.push('\n');
        for r in rows {
            text.push_str(&header.iter().map(|h| r.get(h).cloned().unwrap_or_default()).collect::<Vec<_>>().join("\t"));
            text.push('\n');
        }
        self.write(file, &text);
    }

    /// The `n`th `--query-gpu` answer.
    pub fn query_gpu(&self, n: usize, rows: &[BTreeMap<String, String>]) {
        self.table(&format!("query-gpu.{n}.tsv"), rows, &["index"]);
    }

    /// The `n`th `--query-compute-apps` answer: `(gpu_uuid, pid, used MiB, name)`.
    pub fn compute_apps(&self, n: usize, apps: &[(&str, u32, &str, &str)]) {
        let rows: Vec<BTreeMap<String, String>> = apps
            .iter()
            .map(|(uuid, pid, mem, name)| {
                BTreeMap::from([
                    ("gpu_uuid".to_string(), (*uuid).to_string()),
                    ("pid".to_string(), pid.to_string()),
                    ("used_gpu_memory".to_string(), (*mem).to_string()),
                    ("process_name".to_string(), (*name).to_string()),
                ])
            })
            .collect();
        self.table(&format!("query-compute-apps.{n}.tsv"), &rows, &["gpu_uuid", "pid", "used_gpu_memory", "process_name", "gpu_name", "gpu_bus_id"]);
    }

    /// Make every call fail like the real nvidia-smi does.
    pub fn fail_with(&self, status: i32, stdout: &str) {
        self.write("fail.out", stdout);
        self.write("fail.rc", &status.to_string());
    }

    /// The argument lists nvidia-smi was called with.
    pub fn calls(&self) -> Vec<String> {
        self.read("calls.log").lines().map(str::to_owned).collect()
    }

    /// The settings block pointing at this fake and its ledger.
    pub fn settings(&self) -> serde_json::Value {
        json!({ "nvidia_smi": self.path().to_str().unwrap(), "ledger_dir": self.ledger_dir().to_str().unwrap() })
    }

    /// A harness for step `step` using this fake.
    pub fn harness(&self, step: &str) -> Harness {
        let mut h = Harness::new(step);
        h.settings = self.settings();
        h
    }
}

/// Write an executable shell script.
pub fn script(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(path, perms).unwrap();
}
