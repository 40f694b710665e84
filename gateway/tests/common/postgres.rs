//! A PostgreSQL server of its own for a test: Debian's `postgresql` (`scripts/deps.sh test`),
//! `initdb`/`pg_ctl` in a temporary directory on a free port. Shared by the integration tests
//! (`common`) and the event archive's unit tests (`#[path]`).

use std::path::PathBuf;
use std::process::Command;

/// A PostgreSQL server of its own, stopped (immediately) when dropped.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Postgres {
    /// Starts one; panics with the server's log when it cannot.
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|b| b.join("initdb").exists()).max())
            .expect("PostgreSQL's initdb not found under /usr/lib/postgresql: run scripts/deps.sh test");
        let dir = tempfile::tempdir().unwrap();
        // initdb refuses to run as root: as root, the server runs as Debian's `postgres` user.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = Postgres { dir, bin, port };
        pg.run("initdb", &["-D", &pg.data(), "-U", "sightline", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", pg.port, pg.dir.path().display());
        let log = pg.dir.path().join("server.log").display().to_string();
        pg.run("pg_ctl", &["-D", &pg.data(), "-o", &opts, "-l", &log, "-w", "-t", "30", "start"]);
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let path = self.bin.join(tool);
        let mut cmd = if rustix::process::getuid().is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = cmd.args(args).output().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "{tool} failed: {}\n{}\n{log}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `postgres://sightline@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://sightline@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"])));
    }
}
