//! GNS figures (printed, not asserted): how long from a publish until another resolver sees
//! the new record, and how many verified resolves per second, for the file store and for a
//! real BIND9 started here.
//!
//! `cargo bench -p namesock-resolver --bench gns`

#[path = "../tests/support/bind9.rs"]
mod bind9;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use namesock_identity::Keypair;
use namesock_resolver::{Gns, GnsConfig, Target};

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = || Gns::file(dir.path(), "ns.alt").expect("file store");
    run("file store", &file(), &file(), 300);

    let named = bind9::Named::start();
    let config = GnsConfig::from_values(Some(&named.gns_url()), None).expect("DNS config");
    let dns = || Gns::new(&config).expect("DNS backend");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run("BIND9 (RFC 2136 + TSIG, TXT lookups)", &dns(), &dns(), 100)
    }));
    if let Err(panic) = result {
        eprintln!("named's log:\n{}", named.log());
        std::panic::resume_unwind(panic);
    }
}

fn run(label: &str, writer: &Gns, reader: &Gns, rounds: usize) {
    let kp = Keypair::generate();
    let target = Target::Guid(kp.guid());
    let mut visible = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let port = 1000 + (round % 60000) as u16;
        let addr = SocketAddr::from(([192, 0, 2, (round % 250) as u8 + 1], port));
        let start = Instant::now();
        let published = writer
            .publish(&kp, &[addr], &[])
            .unwrap_or_else(|e| panic!("publish in round {round}: {e}"));
        loop {
            match reader.resolve(&target) {
                Ok(rec) if rec.seq == published.seq => break,
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => panic!("resolve: {e}"),
            }
            assert!(start.elapsed() < Duration::from_secs(10), "never visible");
        }
        visible.push(start.elapsed());
    }
    visible.sort();
    let pct = |p: usize| visible[(visible.len() * p / 100).min(visible.len() - 1)];

    let window = Duration::from_secs(2);
    let start = Instant::now();
    let mut resolves = 0u64;
    while start.elapsed() < window {
        reader.resolve(&target).expect("resolve");
        resolves += 1;
    }
    let per_sec = resolves as f64 / start.elapsed().as_secs_f64();

    println!("{label}:");
    println!(
        "  publish -> visible to another resolver: median {:.3} ms, p99 {:.3} ms, max {:.3} ms ({rounds} rounds)",
        ms(pct(50)),
        ms(pct(99)),
        ms(visible[visible.len() - 1]),
    );
    println!("  verified resolves per second (one thread): {per_sec:.0}");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
