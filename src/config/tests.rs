use super::*;

#[test]
fn sizes() {
    assert_eq!(parse_size("1048576"), Ok(1048576));
    assert_eq!(parse_size("512mb"), Ok(512 << 20));
    assert_eq!(parse_size("8MB"), Ok(8 << 20));
    assert_eq!(parse_size("2kb"), Ok(2048));
    assert!(parse_size("lots").is_err());
    assert!(parse_size("99999999999gb").is_err());
}

#[test]
fn flags_win_and_defaults() {
    let c = Config::try_parse_from(["dbx", "--port", "9000", "--ws-path=/x"]).unwrap();
    assert_eq!(c.port, 9000);
    assert_eq!(c.ws_path, "/x");
    assert_eq!(c.max_batch, 1000);
    assert!(Config::try_parse_from(["dbx", "--port", "70000"]).is_err());
    assert!(Config::try_parse_from(["dbx", "--port", "0"]).is_err());
    assert!(Config::try_parse_from(["dbx", "--log", "loud"]).is_err());
    assert!(Config::try_parse_from(["dbx", "--maxmemory-policy", "random"]).is_err());
    let c = Config::try_parse_from(["dbx", "--persist", "false", "--ws-enabled=false"]).unwrap();
    assert!(!c.persist && !c.ws_enabled);
    let e = Config::try_parse_from(["dbx", "--persist", "maybe"]).unwrap_err().to_string();
    assert!(e.contains("DBX_PERSIST"), "{e}");
    let c = Config::try_parse_from(["dbx", "--tls-min-version", "1.3"]).unwrap();
    assert_eq!(c.tls_min_version, TlsMinVersion::V1_3);
    let e = Config::try_parse_from(["dbx", "--tls-min-version", "1.1"]).unwrap_err().to_string();
    assert!(e.contains("DBX_TLS_MIN_VERSION"), "{e}");
    let e = Config::try_parse_from(["dbx", "--ws-max-connections", "0"]).unwrap_err().to_string();
    assert!(e.contains("DBX_WS_MAX_CONNECTIONS") && e.contains("at least 1"), "{e}");
    let c = Config::try_parse_from(["dbx", "--admin-port", "9100"]).unwrap();
    assert_eq!((c.admin_port, c.admin_host.as_str()), (Some(9100), "127.0.0.1"));
    assert_eq!(Config::try_parse_from(["dbx"]).unwrap().admin_port, None);
    let e = Config::try_parse_from(["dbx", "--admin-port", "0"]).unwrap_err().to_string();
    assert!(e.contains("DBX_ADMIN_PORT"), "{e}");
}

#[test]
fn protected_mode() {
    for host in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"] {
        assert!(check_protected_mode(false, false, host).is_ok(), "{host}");
    }
    for host in ["0.0.0.0", "::", "10.0.0.1", "example.com", ""] {
        let m = check_protected_mode(false, false, host).err().unwrap_or_default();
        assert!(m.contains("DBX_ALLOW_ANONYMOUS"), "{host}: {m}");
        assert!(check_protected_mode(true, false, host).is_ok());
        assert!(check_protected_mode(false, true, host).is_ok());
    }
}

#[test]
fn backend_addresses() {
    assert_eq!(parse_backend("embedded"), Ok(Backend::Embedded));
    let Backend::Redis(t) = parse_backend("redis://u:p%40ss@127.0.0.1:6380/3").unwrap() else { panic!() };
    assert_eq!(t.addrs, vec![("127.0.0.1".to_string(), 6380)]);
    assert_eq!((t.user.as_deref(), t.password.as_deref(), t.db, t.tls), (Some("u"), Some("p@ss"), 3, false));
    assert_eq!(t.describe(), "redis://127.0.0.1:6380/3");
    let Backend::Redis(t) = parse_backend("redis://:secret@[::1]:7000").unwrap() else { panic!() };
    assert_eq!((t.user, t.password.as_deref(), t.addrs[0].0.as_str()), (None, Some("secret"), "::1"));
    let Backend::Redis(t) = parse_backend("redis+sentinel://h1:26379,h2:26380/mymaster").unwrap() else { panic!() };
    assert_eq!(t.addrs.len(), 2);
    assert_eq!(t.sentinel_master.as_deref(), Some("mymaster"));
    let Backend::Redis(t) = parse_backend("rediss://h:1").unwrap() else { panic!() };
    assert!(t.tls);
    for bad in
        ["redis", "http://h:1", "redis://h:0", "redis://h:1/x", "redis://a:1,b:2", "redis+sentinel://h:1", "redis://:1"]
    {
        assert!(parse_backend(bad).is_err(), "{bad}");
    }
    let e = Config::try_parse_from(["dbx", "--backend", "redis://h:99999"]).unwrap_err().to_string();
    assert!(e.contains("DBX_BACKEND") && e.contains("bad port"), "{e}");
    let e = Config::try_parse_from(["dbx", "--backend-connections", "0"]).unwrap_err().to_string();
    assert!(e.contains("DBX_BACKEND_CONNECTIONS"), "{e}");
    let c = Config::try_parse_from(["dbx"]).unwrap();
    assert_eq!((c.backend_connections, c.backend_max_inflight, c.backend_timeout_ms()), (2, 10_000, 5000));
}
