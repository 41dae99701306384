//! The functions' logs: structured, filtered by Lambda's logging configuration.

use tracing_subscriber::filter::{LevelFilter, Targets};

/// Structured logs: JSON when the Lambda logging configuration asks for it, text otherwise,
/// filtered as [`log_filter`] reads the environment.
pub fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, problem) =
        log_filter(std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(), std::env::var("RUST_LOG").ok().as_deref());
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    // Colours only on a terminal: CloudWatch and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().without_time().with_target(false).with_ansi(ansi);
    let installed =
        if json { builder.json().finish().with(filter).try_init() } else { builder.finish().with(filter).try_init() };
    // A second initialisation (tests, the local stack) keeps the first subscriber.
    if let (Ok(()), Some(problem)) = (installed, problem) {
        tracing::warn!("{problem}");
    }
}

/// Which events are logged: Lambda's application log level (`AWS_LAMBDA_LOG_LEVEL`, from the
/// template's `LogLevel`: `TRACE` to `FATAL`, where `FATAL` keeps errors, the most severe
/// level a Rust event has); without it `RUST_LOG`, as `level` and `target=level` directives
/// (`info,aws_smithy_runtime=debug`); else `info`. A value that cannot be read is reported
/// (the second part, to be logged once logging works) and falls back to the next setting.
///
/// A target filter rather than `tracing_subscriber`'s `EnvFilter`, whose span-name and
/// field-value directives nothing here uses and whose regex engine made up 0.4 MB of each
/// function's binary.
pub fn log_filter(lambda_level: Option<&str>, rust_log: Option<&str>) -> (Targets, Option<String>) {
    let mut problems = Vec::new();
    let report = |problems: Vec<String>, instead: &str| {
        (!problems.is_empty()).then(|| format!("{}; {instead}", problems.join("; ")))
    };
    if let Some(level) = lambda_level.map(str::trim).filter(|level| !level.is_empty()) {
        let parsed = if level.eq_ignore_ascii_case("fatal") { Ok(LevelFilter::ERROR) } else { level.parse() };
        match parsed {
            Ok(level) => return (Targets::new().with_default(level), None),
            Err(_) => problems.push(format!("AWS_LAMBDA_LOG_LEVEL={level:?} is not a log level (TRACE to FATAL)")),
        }
    }
    if let Some(directives) = rust_log.map(str::trim).filter(|directives| !directives.is_empty()) {
        match directives.parse::<Targets>() {
            Ok(targets) => return (targets, report(problems, "logging as RUST_LOG says")),
            Err(error) => problems.push(format!("RUST_LOG={directives:?} is not read ({error})")),
        }
    }
    (Targets::new().with_default(LevelFilter::INFO), report(problems, "logging at INFO"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(filter: &Targets, target: &str) -> Vec<tracing::Level> {
        use tracing::Level;
        [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG, Level::TRACE]
            .into_iter()
            .filter(|level| filter.would_enable(target, level))
            .collect()
    }

    #[test]
    fn lambdas_log_level_sets_the_level_of_every_target() {
        use tracing::Level;
        let (filter, problem) = log_filter(Some("DEBUG"), Some("error"));
        assert_eq!(
            levels(&filter, "eventline_ingest::handler"),
            [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG]
        );
        assert_eq!(levels(&filter, "aws_smithy_runtime::client"), levels(&filter, "eventline_ingest::handler"));
        assert_eq!(problem, None);
        let (filter, _) = log_filter(Some("trace"), None);
        assert_eq!(levels(&filter, "ingest").len(), 5);
        let (filter, _) = log_filter(Some(" WARN "), None);
        assert_eq!(levels(&filter, "ingest"), [Level::ERROR, Level::WARN]);
    }

    #[test]
    fn lambdas_fatal_keeps_errors_only() {
        let (filter, problem) = log_filter(Some("FATAL"), None);
        assert_eq!(levels(&filter, "transform"), [tracing::Level::ERROR]);
        assert_eq!(problem, None);
    }

    #[test]
    fn rust_log_directives_apply_without_a_lambda_level() {
        use tracing::Level;
        let (filter, problem) = log_filter(None, Some("warn,eventline_model=debug"));
        assert_eq!(levels(&filter, "eventline_model::aws"), [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG]);
        assert_eq!(levels(&filter, "aws_smithy_runtime"), [Level::ERROR, Level::WARN]);
        assert_eq!(problem, None);
        let (filter, _) = log_filter(Some(""), Some("error"));
        assert_eq!(levels(&filter, "ingest"), [Level::ERROR]);
    }

    #[test]
    fn unreadable_settings_are_reported_and_the_next_one_used() {
        use tracing::Level;
        let (filter, problem) = log_filter(Some("LOUD"), Some("warn"));
        assert_eq!(levels(&filter, "ingest"), [Level::ERROR, Level::WARN]);
        let problem = problem.expect("the unreadable level is reported");
        assert!(
            problem.contains("AWS_LAMBDA_LOG_LEVEL=\"LOUD\"") && problem.ends_with("as RUST_LOG says"),
            "{problem}"
        );

        let (filter, problem) = log_filter(None, Some("info,ingest=loud"));
        assert_eq!(levels(&filter, "ingest"), [Level::ERROR, Level::WARN, Level::INFO]);
        let problem = problem.expect("the unreadable directives are reported");
        assert!(problem.contains("RUST_LOG=\"info,ingest=loud\"") && problem.ends_with("logging at INFO"), "{problem}");

        let (filter, problem) = log_filter(Some("LOUD"), Some("ingest=loud"));
        assert_eq!(levels(&filter, "ingest"), [Level::ERROR, Level::WARN, Level::INFO]);
        let problem = problem.expect("both are reported");
        assert!(problem.contains("AWS_LAMBDA_LOG_LEVEL") && problem.contains("RUST_LOG"), "{problem}");
    }

    #[test]
    fn info_when_nothing_is_set() {
        let (filter, problem) = log_filter(None, Some("  "));
        assert_eq!(levels(&filter, "metrics").len(), 3);
        assert_eq!(problem, None);
    }
}
