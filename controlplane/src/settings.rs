//! Command line, environment and configuration file. Every flag can also come from a
//! `ZCPROXY_…` variable, as Kubernetes deployments expect (`DATABASE_URL` works too), and
//! from a TOML file given with `--config`. Precedence: flag or variable, then file, then
//! the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(
    name = "zcproxy-control",
    version,
    about = "zcproxy control plane: users and ACLs over an API-key-protected HTTP API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Database {
    /// Configuration file (TOML); flags and environment override it.
    #[arg(long, env = "ZCPROXY_CONFIG")]
    pub config: Option<PathBuf>,
    /// PostgreSQL URL, e.g. postgres://user@127.0.0.1:5432/zcproxy
    #[arg(long, env = "ZCPROXY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Connections in the pool [default: 16].
    #[arg(long, env = "ZCPROXY_DB_POOL_SIZE")]
    pub db_pool_size: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply migrations, then serve the API and publish changes.
    Serve {
        #[command(flatten)]
        db: Database,
        /// [default: 127.0.0.1:8080]
        #[arg(long, env = "ZCPROXY_LISTEN")]
        listen: Option<SocketAddr>,
        /// [default: nats://127.0.0.1:4222]
        #[arg(long, env = "ZCPROXY_NATS_URL")]
        nats_url: Option<String>,
        /// An admin API key to create if absent (e.g. from a Kubernetes secret).
        #[arg(long, env = "ZCPROXY_BOOTSTRAP_API_KEY", hide_env_values = true)]
        bootstrap_api_key: Option<String>,
        /// A reader API key to create if absent (the data planes' key, e.g. from a secret).
        #[arg(long, env = "ZCPROXY_BOOTSTRAP_READER_KEY", hide_env_values = true)]
        bootstrap_reader_key: Option<String>,
        /// HTTP worker threads [default: CPUs].
        #[arg(long, env = "ZCPROXY_WORKERS")]
        workers: Option<usize>,
        /// text or json [default: text].
        #[arg(long, env = "ZCPROXY_LOG_FORMAT")]
        log_format: Option<String>,
    },
    /// Exit 0 when URL answers 200 (container health checks; the image has no shell).
    Probe {
        #[arg(default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
    },
    /// Apply migrations and exit.
    Migrate {
        #[command(flatten)]
        db: Database,
    },
    /// Create an API key and print it (shown once).
    CreateApiKey {
        #[command(flatten)]
        db: Database,
        #[arg(long, default_value = "admin")]
        name: String,
        #[arg(long, value_parser = ["admin", "reader"], default_value = "admin")]
        role: String,
    },
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub db_pool_size: Option<usize>,
    pub nats_url: Option<String>,
    pub bootstrap_api_key: Option<String>,
    pub bootstrap_reader_key: Option<String>,
    pub workers: Option<usize>,
    pub log_format: Option<String>,
}

impl FileConfig {
    pub fn load(path: Option<&Path>) -> Result<FileConfig, String> {
        let Some(p) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
    }
}

/// Database settings after merging.
#[derive(Debug)]
pub struct DbSettings {
    pub url: String,
    pub pool_size: usize,
}

impl Database {
    pub fn resolve(&self, file: &FileConfig) -> Result<DbSettings, String> {
        let url = self
            .database_url
            .clone()
            .or_else(|| file.database_url.clone())
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .ok_or("no database URL: --database-url, ZCPROXY_DATABASE_URL, the config file or DATABASE_URL")?;
        Ok(DbSettings {
            url,
            pool_size: self.db_pool_size.or(file.db_pool_size).unwrap_or(16),
        })
    }
}

/// Settings of `serve` after flags, environment, file and defaults are merged.
#[derive(Debug)]
pub struct Serve {
    pub db: DbSettings,
    pub listen: SocketAddr,
    pub nats_url: String,
    pub bootstrap_api_key: Option<String>,
    pub bootstrap_reader_key: Option<String>,
    pub workers: Option<usize>,
    pub log_format: String,
}

/// Merges `serve` flags over the file over defaults.
pub fn serve_settings(command: Command) -> Result<Serve, String> {
    let Command::Serve {
        db,
        listen,
        nats_url,
        bootstrap_api_key,
        bootstrap_reader_key,
        workers,
        log_format,
    } = command
    else {
        return Err("not the serve command".into());
    };
    let file = FileConfig::load(db.config.as_deref())?;
    let log_format = log_format
        .or(file.log_format.clone())
        .unwrap_or_else(|| "text".into());
    if log_format != "text" && log_format != "json" {
        return Err(format!("log format {log_format:?}: expected text or json"));
    }
    Ok(Serve {
        db: db.resolve(&file)?,
        listen: listen
            .or(file.listen)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
        nats_url: nats_url
            .or(file.nats_url)
            .unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
        bootstrap_api_key: bootstrap_api_key.or(file.bootstrap_api_key),
        bootstrap_reader_key: bootstrap_reader_key.or(file.bootstrap_reader_key),
        workers: workers.or(file.workers),
        log_format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_override_defaults() {
        let dir = std::env::temp_dir().join(format!("zc-control-cfg-{}.toml", std::process::id()));
        std::fs::write(
            &dir,
            "listen = \"127.0.0.1:9000\"\ndatabase_url = \"postgres://file/db\"\nnats_url = \"nats://file:4222\"\nworkers = 3\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "zcproxy-control",
            "serve",
            "--config",
            dir.to_str().unwrap(),
            "--database-url",
            "postgres://flag/db",
            "--nats-url",
            "nats://flag:4222",
        ])
        .unwrap();
        let s = serve_settings(cli.command).unwrap();
        assert_eq!(s.db.url, "postgres://flag/db");
        assert_eq!(s.nats_url, "nats://flag:4222");
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(
            (s.workers, s.db.pool_size, s.log_format.as_str()),
            (Some(3), 16, "text")
        );
        std::fs::write(&dir, "lisen = 1\n").unwrap();
        let cli = Cli::try_parse_from([
            "zcproxy-control",
            "serve",
            "--config",
            dir.to_str().unwrap(),
        ])
        .unwrap();
        assert!(serve_settings(cli.command)
            .unwrap_err()
            .contains("unknown field"));
        let _ = std::fs::remove_file(&dir);
    }
}
