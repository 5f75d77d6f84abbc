//! Shared helpers for the end-to-end tests and the benchmarks: where the
//! built components are, typed access to the library components
//! ([`guests`]), and the siftsmall data.

use std::path::PathBuf;

pub mod guests;

/// `target/components/`, where `cargo xtask build` writes the components.
pub fn components_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/components")
}

/// The bytes of a built component (`vector`, `feature-agent.composed`, …).
///
/// Panics with instructions when the components have not been built: these
/// tests run after `cargo xtask build` (which `cargo xtask test` does first).
pub fn component(name: &str) -> Vec<u8> {
    let path = components_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; build the components with `cargo xtask build` (or run `cargo xtask test`)",
            path.display()
        )
    })
}

/// Path of a built component.
pub fn component_path(name: &str) -> PathBuf {
    components_dir().join(format!("{name}.wasm"))
}

/// The siftsmall benchmark data (see `tests/data/siftsmall/README.md`).
pub struct Sift {
    pub dim: usize,
    /// 10,000 × 128, row-major.
    pub base: Vec<f32>,
    /// 100 × 128, row-major.
    pub queries: Vec<f32>,
    /// 100 × 100 nearest base ids per query, nearest first.
    pub truth: Vec<Vec<u32>>,
}

const SIFT_SUMS: [(&str, &str); 3] = [
    ("siftsmall_base.fvecs", "1e90414a3254361aba48a0d58e461f7661fb135dabb3da985290e94de8f60fe0"),
    ("siftsmall_query.fvecs", "095af38bda2741be721447ba97e9286fa918ece946be92a9ae133276eddc1a10"),
    ("siftsmall_groundtruth.ivecs", "b0717bf276111a166f14dcc2653fd04465b2afd6d34c72be641b622cf99f95ae"),
];

fn read_checked(name: &str) -> anyhow::Result<Vec<u8>> {
    use sha2::{Digest, Sha256};
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/siftsmall").join(name);
    let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let want = SIFT_SUMS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s).unwrap_or_default();
    let got: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    anyhow::ensure!(got == want, "{} has sha256 {got}, expected {want}", path.display());
    Ok(bytes)
}

/// Records of `i32 count` + `count` 4-byte values.
fn records(bytes: &[u8]) -> anyhow::Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        anyhow::ensure!(at + 4 <= bytes.len(), "truncated record header at byte {at}");
        let n = i32::from_le_bytes(bytes[at..at + 4].try_into()?) as usize;
        let end = at + 4 + 4 * n;
        anyhow::ensure!(end <= bytes.len(), "truncated record at byte {at}");
        out.push(&bytes[at + 4..end]);
        at = end;
    }
    Ok(out)
}

fn floats(bytes: &[u8]) -> anyhow::Result<(usize, Vec<f32>)> {
    let recs = records(bytes)?;
    let dim = recs.first().map(|r| r.len() / 4).unwrap_or(0);
    let mut out = Vec::with_capacity(recs.len() * dim);
    for r in recs {
        anyhow::ensure!(r.len() == dim * 4, "records of different dimensions");
        out.extend(r.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
    }
    Ok((dim, out))
}

/// Loads and checks siftsmall.
pub fn siftsmall() -> anyhow::Result<Sift> {
    let (dim, base) = floats(&read_checked("siftsmall_base.fvecs")?)?;
    let (qdim, queries) = floats(&read_checked("siftsmall_query.fvecs")?)?;
    anyhow::ensure!(dim == 128 && qdim == 128, "unexpected dimensions {dim}/{qdim}");
    let truth = records(&read_checked("siftsmall_groundtruth.ivecs")?)?
        .into_iter()
        .map(|r| r.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32).collect())
        .collect();
    Ok(Sift { dim, base, queries, truth })
}

/// recall@k of `found` (ids per query) against the ground truth.
pub fn recall_at(k: usize, found: &[Vec<u64>], truth: &[Vec<u32>]) -> f64 {
    let mut hit = 0usize;
    for (f, t) in found.iter().zip(truth) {
        let t: std::collections::HashSet<u64> = t.iter().take(k).map(|x| *x as u64).collect();
        hit += f.iter().take(k).filter(|x| t.contains(x)).count();
    }
    hit as f64 / (k * found.len()) as f64
}
