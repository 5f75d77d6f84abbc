//! Which hosts hold an agent: rendezvous (highest-random-weight) hashing.
//!
//! Every host scores every (host, agent) pair with a hash and the agent
//! goes to the `replicas` best-scoring live hosts, the best one its
//! primary. Every host computes the same answer from the same set of live
//! hosts, with no coordination; when a host leaves, only its agents move
//! (to the next host in their own order), and when it comes back it takes
//! exactly those back.

use std::collections::BTreeSet;

/// The score of `host` for `agent`: the first 8 bytes of
/// `blake3(host \0 agent)`.
fn score(host: &str, agent: &str) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(host.as_bytes());
    hasher.update(&[0]);
    hasher.update(agent.as_bytes());
    let hash = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// The hosts of `hosts` that hold `agent`, primary first: at most
/// `replicas` of them (all when there are fewer).
pub fn owners<'a>(hosts: &'a BTreeSet<String>, agent: &str, replicas: usize) -> Vec<&'a str> {
    let mut ranked: Vec<(u64, &str)> = hosts.iter().map(|h| (score(h, agent), h.as_str())).collect();
    // Highest score first; the host id breaks a (practically impossible) tie.
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked.into_iter().take(replicas.max(1)).map(|(_, h)| h).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn agents() -> Vec<String> {
        (0..600).map(|i| format!("FAJ 121 {i:04}")).collect()
    }

    #[test]
    fn every_agent_gets_distinct_owners_and_the_share_is_even() {
        let three = hosts(&["a", "b", "c"]);
        let mut primaries = std::collections::BTreeMap::<&str, usize>::new();
        for agent in agents() {
            let o = owners(&three, &agent, 2);
            assert_eq!(o.len(), 2);
            assert_ne!(o[0], o[1]);
            *primaries.entry(o[0]).or_default() += 1;
        }
        // 600 agents over 3 hosts: each near 200.
        for (host, n) in primaries {
            assert!((150..=250).contains(&n), "{host} is primary of {n} of 600");
        }
    }

    #[test]
    fn a_host_leaving_moves_only_its_agents_and_coming_back_takes_them_back() {
        let three = hosts(&["a", "b", "c"]);
        let two = hosts(&["a", "c"]);
        for agent in agents() {
            let before = owners(&three, &agent, 2);
            let after = owners(&two, &agent, 2);
            if !before.contains(&"b") {
                assert_eq!(before, after, "{agent} moved though its hosts stayed");
            } else {
                // The survivor keeps its place; the next host fills in.
                let kept: Vec<_> = before.iter().filter(|h| **h != "b").collect();
                assert!(after.contains(kept[0]));
            }
            assert_eq!(owners(&three, &agent, 2), before, "not deterministic");
        }
    }

    #[test]
    fn fewer_hosts_than_replicas_and_none() {
        assert_eq!(owners(&hosts(&["a"]), "x", 2), vec!["a"]);
        assert!(owners(&hosts(&[]), "x", 2).is_empty());
        assert_eq!(owners(&hosts(&["a", "b"]), "x", 0).len(), 1);
    }
}
