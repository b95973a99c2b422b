//! Property tests of the parsers, over seeded hostile inputs: none panics, whatever it is
//! given, and what one accepts it accepts again unchanged (and within its bounds).

use crate::backup_policy::{parse_duration, Retention, Schedule, MAX_DURATION_SECS};
use crate::*;
use propcheck::Gen;

const ROUNDS: usize = 4000;

#[test]
fn names_parse_totally_and_what_they_accept_is_stable() {
    let mut g = Gen::new(0xd0_0a11);
    let seeds = [
        "shop.example.com",
        "xn--bcher-kva.example",
        "Bücher.example",
        "a.b",
        "admin@example.com",
        "/srv/platforms/x",
        "site_12",
        "example",
    ];
    for _ in 0..ROUNDS {
        let input = if g.below(2) == 0 {
            let seed = *g.pick(&seeds);
            g.mutate(seed)
        } else {
            g.string(300)
        };
        if let Ok(d) = DomainName::parse(&input) {
            assert!(d.as_str().len() <= 253, "{input:?}");
            assert!(d
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
            assert_eq!(DomainName::parse(d.as_str()).as_ref(), Ok(&d), "{input:?}");
        }
        if let Ok(e) = Email::parse(&input) {
            assert_eq!(Email::parse(e.as_str()).as_ref(), Ok(&e));
            assert!(!e
                .as_str()
                .contains(['<', '>', ';', ',', '(', ')', '"', ' ']));
        }
        if let Ok(p) = HostPath::parse(&input) {
            assert_eq!(HostPath::parse(p.as_str()).as_ref(), Ok(&p));
            assert!(!p.as_str().split('/').any(|s| s == ".."));
        }
        if let Ok(n) = Name::parse(&input) {
            assert_eq!(Name::parse(n.as_str()).as_ref(), Ok(&n));
        }
        for ok in [
            DbIdent::parse(&input).is_ok(),
            SystemUser::parse(&input).is_ok(),
        ] {
            if ok {
                assert!(input.len() <= 32, "{input:?}");
            }
        }
        let _ = Language::parse(&input);
        let _ = DbPassword::parse(&input);
    }
}

#[test]
fn durations_schedules_and_retention_parse_totally() {
    let mut g = Gen::new(0x5c4e_d01e);
    let far = time::macros::datetime!(9999-12-31 23:00 UTC);
    let early = time::macros::datetime!(1970-01-01 00:00 UTC);
    for _ in 0..ROUNDS {
        let v = g.json(3);
        if let Ok(d) = parse_duration(&v) {
            assert!((1..=MAX_DURATION_SECS).contains(&d.whole_seconds()), "{v}");
        }
        if let Ok(s) = Schedule::parse(&v) {
            assert!((1..=MAX_DURATION_SECS).contains(&s.interval_secs), "{v}");
            for t in [far, early] {
                let _ = s.next_after(t);
                let _ = s.first_run(t, g.u64() as i64);
                let _ = s.into_window(t);
            }
        }
        if let Ok(r) = Retention::parse(&v) {
            assert!(r.keep_newest >= 1);
            let backups: Vec<(usize, time::OffsetDateTime)> = (0..g.below(20))
                .map(|i| (i, far - time::Duration::hours(g.below(100_000) as i64)))
                .collect();
            let purge = r.purge(&backups, far);
            assert!(
                purge.len() < backups.len().max(1),
                "{v}: the newest is kept"
            );
        }
    }
}
