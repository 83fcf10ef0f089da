//! The health check an image declares (its Dockerfile's `HEALTHCHECK`, kept in the image
//! config as docker's `Healthcheck` object), and docker's rule for which check a container runs
//! (moby's merge of the user's config and the image's): the settings' own (`--health-cmd`,
//! `--health-tcp`, `--health-http`) when they name one, else the image's; none with
//! `--no-healthcheck`; each timing value the settings do not give taken from the image.

use super::{ContainerSettings, HealthCheck, HealthTiming};
use serde::{Deserialize, Serialize};

/// An image's health check, as read from its config when the TPC was installed or upgraded
/// onto the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageHealthcheck {
    /// What the image runs; `None` when it says `HEALTHCHECK NONE` (no check, even an
    /// inherited one).
    pub check: Option<HealthCheck>,
    /// The image's timing, docker's defaults where it gives none.
    pub timing: HealthTiming,
}

/// The part of docker's container config a health check needs.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerConfig {
    #[serde(default)]
    healthcheck: Option<DockerHealthcheck>,
    /// The image's `SHELL`, which a `CMD-SHELL` check runs with (kept as any JSON, so a
    /// malformed one is ignored instead of losing the health check).
    #[serde(default)]
    shell: serde_json::Value,
}

/// docker's `Healthcheck` object of an image config. Durations are nanoseconds; 0 means "not
/// given" (docker's default, or the base image's).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerHealthcheck {
    #[serde(default)]
    test: Vec<String>,
    #[serde(default)]
    interval: i64,
    #[serde(default)]
    timeout: i64,
    #[serde(default)]
    start_period: i64,
    #[serde(default)]
    retries: i64,
}

impl ImageHealthcheck {
    /// Reads the `config.Healthcheck` of an image config document (the JSON of its config
    /// blob) as docker's daemon runs it: `CMD` runs its arguments; `CMD-SHELL` runs them after
    /// the image's `SHELL` (`/bin/sh -c` when it sets none); `NONE` disables checks; a `CMD` or
    /// `CMD-SHELL` without a command fails every probe, as docker's does. `None` when the image
    /// declares no check (no object, an empty `Test`, which docker reads as "inherit", or a kind
    /// docker does not run either); a malformed object is no check, as the image's other
    /// settings are read leniently. docker ≥ 25's `StartInterval` is not kept: probes in the
    /// start period run at the interval.
    pub fn from_image_config(config: &serde_json::Value) -> Option<ImageHealthcheck> {
        let c: DockerConfig = serde_json::from_value(config.get("config")?.clone()).ok()?;
        let h = c.healthcheck?;
        let check = match h.test.split_first() {
            None => return None,
            Some((kind, _)) if kind == "NONE" => None,
            Some((kind, rest)) if kind == "CMD" => Some(HealthCheck::Exec(rest.to_vec())),
            Some((kind, rest)) if kind == "CMD-SHELL" => {
                let shell: Option<Vec<String>> = serde_json::from_value(c.shell)
                    .ok()
                    .filter(|s: &Vec<String>| !s.is_empty());
                match (shell, rest) {
                    (None, [cmd]) => Some(HealthCheck::Cmd(cmd.clone())),
                    (_, []) => Some(HealthCheck::Exec(Vec::new())),
                    (shell, rest) => {
                        let mut argv = shell.unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
                        argv.extend_from_slice(rest);
                        Some(HealthCheck::Exec(argv))
                    }
                }
            }
            Some(_) => return None,
        };
        let default = HealthTiming::default();
        let ms = |ns: i64, default: u64| {
            if ns > 0 {
                (ns as u64).div_ceil(1_000_000)
            } else {
                default
            }
        };
        Some(ImageHealthcheck {
            check,
            timing: HealthTiming {
                interval_ms: ms(h.interval, default.interval_ms),
                timeout_ms: ms(h.timeout, default.timeout_ms),
                start_period_ms: ms(h.start_period, default.start_period_ms),
                retries: u32::try_from(h.retries)
                    .ok()
                    .filter(|r| *r > 0)
                    .unwrap_or(default.retries),
            },
        })
    }
}

impl ContainerSettings {
    /// The check a container with these settings runs on `image`'s (docker's rule, see the
    /// module): `None` for no check. A timing value counts as given when it differs from
    /// docker's default (the settings keep values, not which flags were typed).
    pub fn effective_health(&self, image: Option<&ImageHealthcheck>) -> Option<(HealthCheck, HealthTiming)> {
        if self.no_healthcheck {
            return None;
        }
        let check = match (&self.health, image) {
            (Some(check), _) => check.clone(),
            (None, Some(image)) => image.check.clone()?,
            (None, None) => return None,
        };
        let Some(image) = image else {
            return Some((check, self.health_timing));
        };
        let (given, default) = (self.health_timing, HealthTiming::default());
        Some((
            check,
            HealthTiming {
                interval_ms: pick(given.interval_ms, image.timing.interval_ms, default.interval_ms),
                timeout_ms: pick(given.timeout_ms, image.timing.timeout_ms, default.timeout_ms),
                start_period_ms: pick(
                    given.start_period_ms,
                    image.timing.start_period_ms,
                    default.start_period_ms,
                ),
                retries: pick(given.retries, image.timing.retries, default.retries),
            },
        ))
    }
}

/// `given` where it differs from docker's `default` (a value the settings give), else `image`.
fn pick<T: PartialEq>(given: T, image: T, default: T) -> T {
    if given != default { given } else { image }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(healthcheck: serde_json::Value) -> Option<ImageHealthcheck> {
        ImageHealthcheck::from_image_config(&json!({"config": {"Healthcheck": healthcheck}}))
    }

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn dockers_forms_are_read_as_docker_runs_them() {
        let shell = read(json!({
            "Test": ["CMD-SHELL", "wget -q localhost"],
            "Interval": 5_000_000_000u64,
            "Retries": 2,
            "StartPeriod": 1_500_000
        }))
        .unwrap();
        assert_eq!(shell.check, Some(HealthCheck::Cmd("wget -q localhost".into())));
        assert_eq!(
            shell.timing,
            HealthTiming {
                interval_ms: 5000,
                timeout_ms: 30_000,
                retries: 2,
                start_period_ms: 2,
            }
        );
        let exec = read(json!({"Test": ["CMD", "/bin/check", "--quick"]})).unwrap();
        assert_eq!(
            exec.check,
            Some(HealthCheck::Exec(argv(&["/bin/check", "--quick"])))
        );
        assert_eq!(exec.timing, HealthTiming::default());
        assert_eq!(read(json!({"Test": ["NONE"]})).unwrap().check, None);
        // More than one word after CMD-SHELL: passed on after the shell, as docker's exec does.
        assert_eq!(
            read(json!({"Test": ["CMD-SHELL", "echo $0", "zero"]}))
                .unwrap()
                .check,
            Some(HealthCheck::Exec(argv(&["/bin/sh", "-c", "echo $0", "zero"])))
        );
        // No command: a check that fails every probe, as docker's.
        for empty in [json!({"Test": ["CMD"]}), json!({"Test": ["CMD-SHELL"]})] {
            assert_eq!(read(empty).unwrap().check, Some(HealthCheck::Exec(Vec::new())));
        }
        // Inherit (empty), unknown kinds and malformed objects: no check.
        for nothing in [
            json!({"Test": []}),
            json!({}),
            json!({"Test": ["SHELL", "true"]}),
            json!({"Test": "true"}),
            json!(null),
        ] {
            assert_eq!(read(nothing.clone()), None, "{nothing}");
        }
        assert_eq!(ImageHealthcheck::from_image_config(&json!({"config": {}})), None);
        assert_eq!(ImageHealthcheck::from_image_config(&json!({})), None);
        // The image's SHELL runs a CMD-SHELL check.
        let shelled = ImageHealthcheck::from_image_config(&json!({"config": {
            "Shell": ["/bin/bash", "-eu", "-c"],
            "Healthcheck": {"Test": ["CMD-SHELL", "curl -f localhost"]}
        }}))
        .unwrap();
        assert_eq!(
            shelled.check,
            Some(HealthCheck::Exec(argv(&[
                "/bin/bash",
                "-eu",
                "-c",
                "curl -f localhost"
            ])))
        );
        // A SHELL that is no list of words is ignored, not the check.
        let odd = ImageHealthcheck::from_image_config(&json!({"config": {
            "Shell": "/bin/bash",
            "Healthcheck": {"Test": ["CMD-SHELL", "true"]}
        }}))
        .unwrap();
        assert_eq!(odd.check, Some(HealthCheck::Cmd("true".into())));
    }

    #[test]
    fn the_settings_check_wins_no_healthcheck_disables_and_timing_merges_field_by_field() {
        let image = ImageHealthcheck {
            check: Some(HealthCheck::Cmd("image-check".into())),
            timing: HealthTiming {
                interval_ms: 5000,
                timeout_ms: 2000,
                retries: 5,
                start_period_ms: 100,
            },
        };
        let mut s = ContainerSettings::default();
        assert_eq!(s.effective_health(None), None);
        assert_eq!(
            s.effective_health(Some(&image)),
            Some((image.check.clone().unwrap(), image.timing))
        );
        // A timing flag alone applies to the image's check.
        s.health_timing.interval_ms = 1000;
        let (_, timing) = s.effective_health(Some(&image)).unwrap();
        assert_eq!((timing.interval_ms, timing.timeout_ms), (1000, 2000));
        // The settings' own check still takes the timing it does not give from the image.
        s.health = Some(HealthCheck::Tcp(80));
        let (check, timing) = s.effective_health(Some(&image)).unwrap();
        assert_eq!(check, HealthCheck::Tcp(80));
        assert_eq!(
            (timing.interval_ms, timing.timeout_ms, timing.retries),
            (1000, 2000, 5)
        );
        assert_eq!(
            s.effective_health(None),
            Some((HealthCheck::Tcp(80), s.health_timing))
        );
        s.health = None;
        s.no_healthcheck = true;
        assert_eq!(s.effective_health(Some(&image)), None);
        let none = ImageHealthcheck {
            check: None,
            timing: HealthTiming::default(),
        };
        assert_eq!(ContainerSettings::default().effective_health(Some(&none)), None);
    }
}
