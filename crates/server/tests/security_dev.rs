//! Security suite, `mana-ai dev` as root (issue 14, point 6): the private cluster runs as
//! the unprivileged OS user `mana-ai-pg`, and root must not weaken the host for it.
//!
//! * A data dir below a directory closed to that user (like `/root`, mode 0700) is refused
//!   with a message naming the directory — its mode is left unchanged (the old code added
//!   `o+x` to every ancestor).
//! * Files written into the cluster's directory, which that user (and so any PostgreSQL
//!   superuser) controls, never follow a planted symlink (`mana-ai.conf -> victim`).
//!
//! Both only mean something when the tests run as root; otherwise they return at once.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use mana_ai_pgcluster::{Cluster, ClusterConfig};

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A directory under the system temp dir (mode 0755), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "mana-ai-sec-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn a_closed_parent_is_refused_and_its_mode_left_unchanged() {
    if !is_root() {
        return;
    }
    let scratch = Scratch::new("closed");
    let home = scratch.0.join("home");
    std::fs::create_dir_all(home.join("project")).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let pg = home.join("project/.mana-ai/pg");
    let e = tokio::task::spawn_blocking(move || Cluster::start(ClusterConfig::persistent(pg)))
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(e.contains(&home.display().to_string()), "{e}");
    assert!(e.contains("--data-dir"), "{e}");
    let mode = std::fs::metadata(&home).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700, "the parent's mode changed");
}

#[tokio::test]
async fn a_planted_symlink_in_the_cluster_dir_is_not_followed() {
    if !is_root() {
        return;
    }
    let scratch = Scratch::new("symlink");
    let victim = scratch.0.join("victim");
    std::fs::write(&victim, "root-owned content\n").unwrap();
    let pg = scratch.0.join("data/pg");
    let cfg = ClusterConfig::persistent(pg.clone());
    let first = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || Cluster::start(cfg))
            .await
            .unwrap()
            .expect("first start")
    };
    tokio::task::spawn_blocking(move || first.stop())
        .await
        .unwrap()
        .expect("stop");
    // What a PostgreSQL superuser (or the OS user it runs as) could do in its directory.
    let conf = pg.join("mana-ai.conf");
    std::fs::remove_file(&conf).unwrap();
    std::os::unix::fs::symlink(&victim, &conf).unwrap();
    let second = tokio::task::spawn_blocking(move || Cluster::start(cfg))
        .await
        .unwrap()
        .expect("second start");
    let victim_text = std::fs::read_to_string(&victim).unwrap();
    let conf_is_link = std::fs::symlink_metadata(&conf)
        .unwrap()
        .file_type()
        .is_symlink();
    let conf_text = std::fs::read_to_string(&conf).unwrap_or_default();
    tokio::task::spawn_blocking(move || second.stop())
        .await
        .unwrap()
        .expect("stop");
    assert_eq!(
        victim_text, "root-owned content\n",
        "the symlink was followed"
    );
    assert!(!conf_is_link, "mana-ai.conf is still a symlink");
    assert!(conf_text.contains("listen_addresses"), "{conf_text}");
}
