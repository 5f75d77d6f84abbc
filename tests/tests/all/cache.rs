//! Compiled components are cached in memory and on disk; a corrupt or
//! truncated artifact is detected and recompiled, never trusted.

use elex_host::cache::Origin;
use elex_host::{Host, HostConfig};
use elex_ran::Catalog;
use elex_tests::component_path;

fn host_with(dir: &std::path::Path) -> Host {
    Host::new(HostConfig { cache_dir: Some(dir.to_path_buf()), ..HostConfig::default() }).unwrap()
}

fn artifacts(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    v.sort();
    v
}

fn answers(host: &Host, loaded: &elex_host::LoadedComponent) {
    let feature = Catalog::embedded().unwrap().by_faj("FAJ 121 3094").unwrap().agent_config();
    let mut i = host.instantiate(loaded, feature).unwrap();
    let r = i.handle(&host.query("MIMO Sleep Mode counters")).unwrap();
    assert!(r.content.contains("MIMO Sleep Mode"));
}

#[test]
fn loads_from_memory_then_disk_and_recompiles_bad_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let path = component_path("feature-agent.composed");

    let host = host_with(dir.path());
    let first = host.load_unsigned_file(&path).unwrap();
    assert_eq!(first.origin, Origin::Compiled);
    let again = host.load_unsigned_file(&path).unwrap();
    assert_eq!(again.origin, Origin::Memory);
    assert_eq!(again.interfaces, first.interfaces);
    let files = artifacts(dir.path());
    assert_eq!(files.len(), 1, "one artifact per digest and engine");
    assert!(files[0].file_name().unwrap().to_string_lossy().starts_with(&first.digest));

    // A new host (a new process, in effect) reads the artifact.
    let host = host_with(dir.path());
    let from_disk = host.load_unsigned_file(&path).unwrap();
    assert_eq!(from_disk.origin, Origin::Disk);
    assert_eq!(from_disk.interfaces, first.interfaces);
    answers(&host, &from_disk);

    // One flipped byte in the artifact: detected, removed, recompiled.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&files[0], &bytes).unwrap();
    let host = host_with(dir.path());
    let rebuilt = host.load_unsigned_file(&path).unwrap();
    assert_eq!(rebuilt.origin, Origin::Compiled);
    answers(&host, &rebuilt);

    // A truncated artifact: the same.
    let good = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &good[..good.len() / 3]).unwrap();
    let host = host_with(dir.path());
    assert_eq!(host.load_unsigned_file(&path).unwrap().origin, Origin::Compiled);
    assert_eq!(std::fs::read(&files[0]).unwrap(), good, "the artifact is rewritten whole");

    // Garbage with a valid digest header still fails wasmtime's own checks.
    let body = b"not a precompiled component".to_vec();
    let mut forged = blake3::hash(&body).as_bytes().to_vec();
    forged.extend_from_slice(&body);
    std::fs::write(&files[0], &forged).unwrap();
    let host = host_with(dir.path());
    assert_eq!(host.load_unsigned_file(&path).unwrap().origin, Origin::Compiled);
}

#[test]
fn a_bad_component_is_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(dir.path());
    assert!(host.load_unsigned_file(&component_path("vector")).is_err());
    assert!(artifacts(dir.path()).is_empty());
    assert!(host.load_unsigned_file(&component_path("vector")).is_err(), "still refused the second time");
}
