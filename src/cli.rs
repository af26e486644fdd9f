//! The command line's shape: commands, flags and their help, with closed sets as value enums
//! (a wrong value lists the right ones) and ages as human durations. `main.rs` runs them.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use otpd::domain::Channel;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "otpd", version, about = "OTP delivery gateway")]
pub struct Cli {
    /// Configuration file layered over the defaults (default: /etc/otpd/otpd.toml if present).
    #[arg(long, global = true, env = "OTPD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon: consume jobs and deliver codes.
    Run,
    /// Create the database if needed and apply pending migrations.
    Migrate,
    /// Validate the configuration and print the effective settings, secrets redacted.
    CheckConfig,
    /// Print delivery health per channel, provider and country.
    Report {
        /// How far back to look, as a duration: 30m, 1h30m, 7d, 1w.
        #[arg(long, default_value = "1h", value_parser = age)]
        since: Age,
        /// Table for people, JSON for scripts.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Delete deliveries and audit events older than the given age; the purge is recorded.
    Purge {
        /// Records younger than this are kept: 30d, 12h, 1w.
        #[arg(long, value_parser = age)]
        older_than: Age,
    },
    /// The hash-chained audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Ask a running otpd (at `http.listen`) whether it is ready: exit 0 if `/readyz` says
    /// so, 1 if not. For container health checks, where the image has no HTTP client.
    Healthcheck,
    /// Publish one send-code job (for demos and smoke tests); the job is checked as otpd
    /// would check it, and refused here if invalid.
    Send {
        /// The delivery channel; the routing key of the job.
        #[arg(long, default_value = "sms", value_parser = channel())]
        channel: Channel,
        /// The destination: an E.164 number for sms, voice and whatsapp, an address for email.
        #[arg(long)]
        to: String,
        /// The code to deliver: 4 to 10 digits.
        #[arg(long)]
        code: String,
        /// The account the code is for.
        #[arg(long, default_value = "demo-account")]
        account_id: String,
        /// The challenge's idempotency key; defaults to a fresh id.
        #[arg(long)]
        challenge_id: Option<String>,
        /// Seconds until the code expires; zero or less makes a job otpd ends `expired`.
        #[arg(long, default_value_t = 300, allow_negative_numbers = true)]
        ttl: i64,
    },
    /// Print a shell's completion script for otpd, e.g. `otpd completions bash`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print otpd's manual page (roff), e.g. `otpd man | man -l -`.
    Man,
    /// Print the JSON Schema of the configuration file, for editors.
    ConfigSchema,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Seal pending events, then recompute the whole chain; exits 1 if any row was edited or
    /// deleted, 2 if the chain could not be checked (the database unreachable).
    Verify,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// The contract's channels, listed by name in help and errors: one list, the domain's.
fn channel() -> impl TypedValueParser<Value = Channel> {
    PossibleValuesParser::new(Channel::ALL.map(Channel::as_str))
        .map(|name| Channel::parse(&name).expect("a listed channel parses"))
}

/// An age as typed (kept for the report's heading) and as a duration.
#[derive(Clone, Debug)]
pub struct Age {
    pub text: String,
    pub duration: chrono::Duration,
}

/// A human duration (`90min`, `1h30m`, `1w`), through humantime.
fn age(s: &str) -> Result<Age, String> {
    let std = humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 30m, 1h30m, 7d, 1w)"))?;
    let duration = chrono::Duration::from_std(std).map_err(|_| format!("`{s}` is too long"))?;
    Ok(Age {
        text: s.to_string(),
        duration,
    })
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "otpd", &mut out);
    out
}

/// The manual page, in roff.
pub fn man() -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_human_durations() {
        for (text, secs) in [
            ("1w", 604_800),
            ("90min", 5_400),
            ("1h30m", 5_400),
            ("30d", 2_592_000),
        ] {
            assert_eq!(age(text).unwrap().duration.num_seconds(), secs, "{text}");
        }
        assert!(age("soon").is_err());
        assert!(age("-5m").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed_and_refuses_unknown_values_by_listing_the_known() {
        Cli::command().debug_assert();
        let err = Cli::try_parse_from([
            "otpd",
            "send",
            "--channel",
            "fax",
            "--to",
            "x",
            "--code",
            "1",
        ])
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("sms") && err.contains("voice") && err.contains("email"),
            "{err}"
        );
        let err = Cli::try_parse_from(["otpd", "report", "--format", "xml"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("table") && err.contains("json"), "{err}");
        let ok = Cli::try_parse_from([
            "otpd",
            "send",
            "--to",
            "+14155550123",
            "--code",
            "123456",
            "--ttl",
            "-5",
        ]);
        assert!(ok.is_ok(), "a negative ttl is a value");
    }

    #[test]
    fn every_flag_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path} {id} has no help");
            }
            for sub in cmd.get_subcommands() {
                assert!(
                    sub.get_about().is_some(),
                    "{path} {} has no about",
                    sub.get_name()
                );
                walk(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        walk(&Cli::command(), "otpd");
    }

    #[test]
    fn completions_and_the_manual_name_every_command() {
        let bash = String::from_utf8(completions(clap_complete::Shell::Bash)).unwrap();
        // roff escapes a hyphen.
        let man = String::from_utf8(man().unwrap())
            .unwrap()
            .replace("\\-", "-");
        for command in [
            "run",
            "check-config",
            "report",
            "healthcheck",
            "config-schema",
        ] {
            assert!(bash.contains(command), "completions: {command}");
            assert!(man.contains(command), "man: {command}");
        }
    }
}
