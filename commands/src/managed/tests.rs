//! The managed server's pure parts: the pin, configurations, the running
//! port, restart delays.

use super::*;

#[test]
fn the_pin_is_read_from_the_script() {
    let pinned = pinned_version();
    assert!(ServerVersion::parse(pinned).is_some(), "pin {pinned:?}");
    assert!(check_server_version(pinned).is_ok());
}

#[test]
fn configs_render() {
    let spec = ServerSpec {
        server_name: "n1".into(),
        port: 4222,
        store_dir: PathBuf::from("/tmp/x"),
        sync: SyncMode::Always,
        cluster: Some(ClusterSpec { name: "c".into(), port: 6222, route_ports: vec![6222, 6223] }),
        client_token: None,
    };
    let text = spec.render().expect("renders");
    assert!(text.contains("sync_interval: always"));
    assert!(!text.contains("authorization"), "the test harness's servers take any client");
    assert!(text.contains("\"nats-route://127.0.0.1:6223\""));
    let interval = ServerSpec { sync: SyncMode::Interval, cluster: None, ..spec };
    let text = interval.render().expect("renders");
    assert!(!text.contains("sync_interval"));
    assert!(!text.contains("cluster"));
    let managed = ServerSpec { client_token: Some(NatsToken("ab12".into())), ..interval.clone() };
    assert!(managed.render().expect("renders").contains("authorization {\n  token: \"ab12\"\n}"));
    assert_eq!(format!("{:?}", managed.client_token), "Some(NatsToken([redacted]))");
    let bad = ServerSpec { store_dir: PathBuf::from("/tmp/a\"b"), ..interval };
    assert!(bad.render().is_err());
}

#[test]
fn the_running_port_is_read_from_the_configuration_written() {
    let dir = std::env::temp_dir().join(format!("halobuzz-running-port-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a folder");
    assert_eq!(running_port(&dir), None, "no server was started there");
    let spec = ServerSpec {
        server_name: "n1".into(),
        port: 4333,
        store_dir: dir.join("nats"),
        sync: SyncMode::Interval,
        cluster: Some(ClusterSpec { name: "c".into(), port: 6222, route_ports: vec![6222] }),
        client_token: None,
    };
    std::fs::write(dir.join(CONFIG_FILE_NAME), spec.render().expect("renders")).expect("written");
    assert_eq!(running_port(&dir), Some(4333), "the client port, not the cluster's");
    std::fs::remove_dir_all(&dir).expect("removed");
}

#[test]
fn restart_delays_grow_and_stay_bounded() {
    let delays: Vec<Duration> = restart_schedule(40).delays().collect();
    assert_eq!(delays.len(), 40, "one pause per restart allowed");
    assert!(delays[0] >= Duration::from_millis(100) && delays[0] <= Duration::from_millis(200), "{delays:?}");
    assert!(delays.iter().all(|delay| *delay <= Duration::from_millis(RESTART_DELAY_MS_MAX)), "{delays:?}");
    assert!(delays[39] >= Duration::from_millis(RESTART_DELAY_MS_MAX / 2), "{delays:?}");
    assert_eq!(restart_schedule(0).delays().count(), 0, "no restart allowed, no pause");
}
