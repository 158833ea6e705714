//! The two text formats `/metrics` answers in: OpenMetrics for a scraper whose `Accept` asks for
//! it (Prometheus does by default), else the Prometheus text format 0.0.4, which every scraper
//! reads (`curl`, older agents, anything sending `Accept: text/plain` or nothing).
//!
//! prometheus-client only writes OpenMetrics, so the 0.0.4 text is made from it: the two differ in
//! the metadata lines alone for what this crate exports (counter and info families are named with
//! their sample suffix, `unknown` is `untyped`, no `# UNIT` and no `# EOF`); samples are the same.

use prometheus_client::registry::Registry;

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    Prometheus,
}

impl Format {
    /// The format to answer a request whose `Accept` headers are `accept`: OpenMetrics when a
    /// media range names `application/openmetrics-text` without `q=0`, else Prometheus text.
    pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Format {
        let openmetrics = accept
            .into_iter()
            .flat_map(|header| header.split(','))
            .any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or_default();
                media.eq_ignore_ascii_case("application/openmetrics-text")
                    && !parts.any(|p| {
                        p.split_once('=').is_some_and(|(k, v)| {
                            k.trim().eq_ignore_ascii_case("q")
                                && v.trim().parse::<f32>().is_ok_and(|q| q == 0.0)
                        })
                    })
            });
        if openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// Every metric of `registries`, in this format.
    pub fn encode(self, registries: &[&Registry]) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        for registry in registries {
            prometheus_client::encoding::text::encode_registry(&mut text, registry)?;
        }
        Ok(match self {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode_eof(&mut text)?;
                text
            }
            Format::Prometheus => prometheus_text(&text),
        })
    }
}

/// The Prometheus 0.0.4 text of `openmetrics`, OpenMetrics text as prometheus-client writes it:
/// each family's `# HELP` line followed by its `# TYPE` line, then an optional `# UNIT` line.
pub fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut lines = openmetrics.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let Some(help) = line.strip_prefix("# HELP ") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let (name, text) = help.split_once(' ').unwrap_or((help, ""));
        let kind = lines
            .next_if(|next| next.starts_with("# TYPE "))
            .and_then(|t| t.rsplit_once(' '))
            .map(|(_, kind)| kind);
        // 0.0.4 names a family as its samples are named.
        let (suffix, kind) = match kind {
            Some("counter") => ("_total", Some("counter")),
            Some("info") => ("_info", Some("gauge")),
            Some("unknown") => ("", Some("untyped")),
            other => ("", other),
        };
        out.push_str(&format!("# HELP {name}{suffix} {text}\n"));
        if let Some(kind) = kind {
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::metrics::info::Info;
    use prometheus_client::registry::Unit;

    #[test]
    fn openmetrics_only_when_asked_for() {
        let cases = [
            (vec![], Format::Prometheus),
            (vec!["text/plain"], Format::Prometheus),
            (vec!["text/plain; version=0.0.4"], Format::Prometheus),
            (vec!["*/*"], Format::Prometheus),
            (
                vec!["application/openmetrics-text; version=1.0.0"],
                Format::OpenMetrics,
            ),
            // What Prometheus sends by default.
            (
                vec![
                    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
                     application/openmetrics-text;version=0.0.1;q=0.5,\
                     text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,\
                     text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                ],
                Format::OpenMetrics,
            ),
            (
                vec!["text/plain", "Application/OpenMetrics-Text"],
                Format::OpenMetrics,
            ),
            (
                vec!["application/openmetrics-text; q=0, text/plain"],
                Format::Prometheus,
            ),
            (
                vec!["application/openmetrics-text;q=0.0"],
                Format::Prometheus,
            ),
            (vec!["application/openmetrics-textx"], Format::Prometheus),
        ];
        for (accept, format) in cases {
            assert_eq!(
                Format::negotiate(accept.iter().copied()),
                format,
                "{accept:?}"
            );
        }
    }

    /// A registry with a metric of every kind prometheus-client has, each with a sample.
    fn every_kind() -> Registry {
        let mut registry = Registry::with_prefix("keysmith");
        let counter: Family<[(&str, &str); 1], Counter> = Family::default();
        counter.get_or_create(&[("code", "VALID")]).inc_by(3);
        registry.register("verify_requests", "Verifications answered", counter);
        let gauge: Gauge = Gauge::default();
        gauge.set(7);
        registry.register("index_tokens", "Tokens indexed", gauge);
        let histogram = Histogram::new([0.5]);
        histogram.observe(0.25);
        registry.register_with_unit("duration", "Time taken", Unit::Seconds, histogram);
        registry.register("build", "The build", Info::new([("version", "1.2.3")]));
        registry
    }

    #[test]
    fn prometheus_text_names_families_as_their_samples() {
        let text = Format::Prometheus.encode(&[&every_kind()]).unwrap();
        assert_eq!(
            text,
            "# HELP keysmith_verify_requests_total Verifications answered.\n\
             # TYPE keysmith_verify_requests_total counter\n\
             keysmith_verify_requests_total{code=\"VALID\"} 3\n\
             # HELP keysmith_index_tokens Tokens indexed.\n\
             # TYPE keysmith_index_tokens gauge\n\
             keysmith_index_tokens 7\n\
             # HELP keysmith_duration_seconds Time taken.\n\
             # TYPE keysmith_duration_seconds histogram\n\
             keysmith_duration_seconds_sum 0.25\n\
             keysmith_duration_seconds_count 1\n\
             keysmith_duration_seconds_bucket{le=\"0.5\"} 1\n\
             keysmith_duration_seconds_bucket{le=\"+Inf\"} 1\n\
             # HELP keysmith_build_info The build.\n\
             # TYPE keysmith_build_info gauge\n\
             keysmith_build_info{version=\"1.2.3\"} 1\n"
        );
    }

    #[test]
    fn openmetrics_is_prometheus_clients_own_text_across_registries() {
        let (first, second) = (every_kind(), Registry::default());
        let mut expected = String::new();
        prometheus_client::encoding::text::encode(&mut expected, &first).unwrap();
        let text = Format::OpenMetrics.encode(&[&first, &second]).unwrap();
        assert_eq!(text, expected);
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn unknown_families_are_untyped_and_other_lines_pass_through() {
        let text = "# HELP a_thing A thing\n# TYPE a_thing unknown\na_thing 1\n# HELP lone Lone\nlone 2\n# EOF\n";
        assert_eq!(
            prometheus_text(text),
            "# HELP a_thing A thing\n# TYPE a_thing untyped\na_thing 1\n# HELP lone Lone\nlone 2\n"
        );
    }
}
