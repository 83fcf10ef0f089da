//! The health check an image declares (its Dockerfile's `HEALTHCHECK`, kept in the image
//! config as docker's `Healthcheck` object), and docker's rule for which check a container runs:
//! the settings' own (`--health-cmd`, `--health-tcp`, `--health-http`) when they name one; none
//! with `--no-healthcheck`; otherwise the image's, with any `--health-*` timing flag given
//! applying to it.

use super::{ContainerSettings, HealthCheck, HealthTiming};
use serde::{Deserialize, Serialize};

/// An image's health check, as read from its config when the TPC was installed or upgraded
/// onto it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageHealthcheck {
    /// What the image runs; `None` when it says `HEALTHCHECK NONE` (no check, even an
    /// inherited one).
    pub check: Option<HealthCheck>,
    /// The image's timing, docker's defaults where it gives none.
    pub timing: HealthTiming,
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
    /// blob). `None` when the image declares no check (no object, an empty `Test`, which docker
    /// reads as "inherit", or one it would not run either); a malformed object is no check, as
    /// the image's other settings are read leniently.
    pub fn from_image_config(config: &serde_json::Value) -> Option<ImageHealthcheck> {
        let raw = config.get("config")?.get("Healthcheck")?;
        let h: DockerHealthcheck = serde_json::from_value(raw.clone()).ok()?;
        let check = match h.test.split_first() {
            None => return None,
            Some((kind, _)) if kind == "NONE" => None,
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => Some(HealthCheck::Exec(rest.to_vec())),
            Some((kind, [cmd])) if kind == "CMD-SHELL" && !cmd.trim().is_empty() => {
                Some(HealthCheck::Cmd(cmd.clone()))
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
    /// module): `None` for no check. A timing flag counts as given when it differs from docker's
    /// default (the settings keep values, not which flags were typed).
    pub fn effective_health(&self, image: Option<&ImageHealthcheck>) -> Option<(HealthCheck, HealthTiming)> {
        if let Some(check) = &self.health {
            return Some((check.clone(), self.health_timing));
        }
        if self.no_healthcheck {
            return None;
        }
        let image = image?;
        let check = image.check.clone()?;
        let (given, default) = (self.health_timing, HealthTiming::default());
        let pick = |given: u64, image: u64, default: u64| if given != default { given } else { image };
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
                retries: if given.retries != default.retries {
                    given.retries
                } else {
                    image.timing.retries
                },
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(healthcheck: serde_json::Value) -> Option<ImageHealthcheck> {
        ImageHealthcheck::from_image_config(&json!({"config": {"Healthcheck": healthcheck}}))
    }

    #[test]
    fn dockers_forms_are_read_as_docker_runs_them() {
        let shell = read(
            json!({"Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 5_000_000_000u64,
            "Retries": 2, "StartPeriod": 1_500_000}),
        )
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
            Some(HealthCheck::Exec(vec!["/bin/check".into(), "--quick".into()]))
        );
        assert_eq!(exec.timing, HealthTiming::default());
        assert_eq!(read(json!({"Test": ["NONE"]})).unwrap().check, None);
        // Inherit (empty), unknown kinds, missing commands and malformed objects: no check.
        for nothing in [
            json!({"Test": []}),
            json!({}),
            json!({"Test": ["CMD"]}),
            json!({"Test": ["CMD-SHELL", " "]}),
            json!({"Test": ["CMD-SHELL", "a", "b"]}),
            json!({"Test": ["SHELL", "true"]}),
            json!({"Test": "true"}),
            json!(null),
        ] {
            assert_eq!(read(nothing.clone()), None, "{nothing}");
        }
        assert_eq!(ImageHealthcheck::from_image_config(&json!({"config": {}})), None);
        assert_eq!(ImageHealthcheck::from_image_config(&json!({})), None);
    }

    #[test]
    fn the_settings_check_wins_no_healthcheck_disables_and_timing_flags_apply_to_the_images() {
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
        s.health_timing.interval_ms = 1000;
        let (_, timing) = s.effective_health(Some(&image)).unwrap();
        assert_eq!((timing.interval_ms, timing.timeout_ms), (1000, 2000));
        s.health = Some(HealthCheck::Tcp(80));
        assert_eq!(
            s.effective_health(Some(&image)),
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
