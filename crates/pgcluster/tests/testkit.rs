//! The test kit's shared cluster: one cluster per test binary, whatever the runtime.
//! (Databases in it are made by `mana_ai_store::testkit`; see store/tests/testkit.rs.)

use mana_ai_pgcluster::testkit::shared_cluster;

#[test]
fn shared_cluster_is_one_cluster_across_threads() {
    let port = shared_cluster().port();
    let other = std::thread::spawn(|| shared_cluster().port())
        .join()
        .unwrap();
    assert_eq!(port, other);
    assert!(shared_cluster()
        .superuser_url("postgres")
        .contains(&format!(":{port}/")));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
}
