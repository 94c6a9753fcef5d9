//! Uploads one file to one or more hosts the way `airlock apply` uploads a bundle blob. Each host
//! gets one SSH connection, and the bytes are hashed locally as they are read, written to a
//! temporary name, hashed again on the host and renamed into place. Prints the wall time of the
//! transfers in seconds.
//!
//! Used by `scripts/bench` to compare airlock's uploads with OpenSSH's.
//!
//! Usage: upload FILE DEST KNOWN_HOSTS KEY USER@ADDRESS...

use std::path::PathBuf;
use std::time::Instant;

use airlock::digest::{HashingReader, hash_file};
use airlock::remote::stream::async_reader;
use airlock::remote::{
    ConnectOptions, Host, HostKeyPolicy, KnownHosts, Placement, Session, SshTarget,
};
use airlock::ui::Ui;
use anyhow::{Context, bail};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        bail!("usage: upload FILE DEST KNOWN_HOSTS KEY USER@ADDRESS...");
    }
    let file = PathBuf::from(&args[0]);
    let dest = args[1].clone();
    let known_hosts = KnownHosts::load(&PathBuf::from(&args[2]))?;
    let key = PathBuf::from(&args[3]);
    let policy = HostKeyPolicy::new(known_hosts, false);

    // bundle.yaml lists each blob's digest, so apply has it before it uploads.
    let (expected, size) =
        hash_file(&file).with_context(|| format!("cannot read {}", file.display()))?;

    let mut hosts = Vec::new();
    for spec in &args[4..] {
        let Some((user, address)) = spec.split_once('@') else {
            bail!("expected USER@ADDRESS, got {spec:?}");
        };
        let target = SshTarget::direct(address, 22, user, Some(key.clone()));
        let session = Session::connect(&target, &policy, &ConnectOptions::default()).await?;
        hosts.push(Host::new(session, user != "root"));
    }

    let ui = Ui::hidden();
    let start = Instant::now();
    let uploads = hosts.iter().map(|host| {
        let (file, dest, ui) = (file.clone(), dest.clone(), &ui);
        async move {
            let item = ui.item(host.label(), Some(size));
            let reader = HashingReader::new(std::fs::File::open(&file)?);
            host.write_verified(
                Placement::new(&dest, "0644"),
                async_reader(reader),
                size,
                expected,
                Some(&item),
            )
            .await?;
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(uploads).await?;
    let seconds = start.elapsed().as_secs_f64();
    println!("{seconds:.3}");

    for host in hosts {
        host.close().await;
    }
    Ok(())
}
