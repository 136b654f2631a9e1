//! Model commands: fitting specs (one, or a directory for the monthly retrain),
//! promotion and the registry's listing.

use anyhow::Context;
use indicatif::MultiProgress;
use nudge::models::registry::Registry;
use nudge::training::card::Card;
use nudge::training::spec::ModelSpec;
use nudge::training::train::{self, Stages};
use sqlx::PgPool;

use crate::pipeline::connect_migrated;

/// `nudge-train fit`: one spec, or every spec of a directory, each new version promoted
/// when `promote` and its gates allow; fails when any spec could not be fitted or, asked
/// to, promoted.
pub(crate) async fn run(
    spec: &std::path::Path,
    database_url: &str,
    models_dir: &std::path::Path,
    promote: bool,
) -> anyhow::Result<()> {
    let specs = if spec.is_dir() {
        read_specs(spec)?
    } else {
        vec![read_spec(spec)?]
    };
    let pool = connect_migrated(database_url).await?;
    let registry = Registry::new(models_dir);
    let fitted = fit_specs(&pool, &registry, &specs, promote).await;
    if specs.len() > 1 {
        print_fitted(&fitted);
    }
    let not_fitted = fitted
        .iter()
        .filter(|f| matches!(f, Fitted::Failed { .. }))
        .count();
    let refused = fitted
        .iter()
        .filter(|f| {
            matches!(
                f,
                Fitted::Saved {
                    promotion: Promotion::Refused,
                    ..
                }
            )
        })
        .count();
    anyhow::ensure!(
        not_fitted + refused == 0,
        "{not_fitted} of {} specs could not be fitted; {refused} new versions were refused promotion",
        specs.len()
    );
    Ok(())
}

/// Reads and checks every spec of a directory (each `*.yaml`, by name), before anything
/// connects or runs.
pub(crate) fn read_specs(dir: &std::path::Path) -> anyhow::Result<Vec<ModelSpec>> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no *.yaml spec in {}", dir.display());
    files.iter().map(|path| read_spec(path)).collect()
}

/// Reads and checks a model spec, before anything connects or runs.
pub(crate) fn read_spec(path: &std::path::Path) -> anyhow::Result<ModelSpec> {
    let yaml =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ModelSpec::from_yaml(&yaml).with_context(|| format!("{}: invalid model spec", path.display()))
}

/// Fits one spec, saves the new version and prints its candidates and card headline.
async fn fit(pool: &PgPool, registry: &Registry, spec: &ModelSpec) -> anyhow::Result<Card> {
    let stages = Stages::new(MultiProgress::new());
    let outcome = train::fit(pool, registry, spec, &stages)
        .await
        .with_context(|| format!("fitting {}", spec.name))?;
    let card = outcome.card;
    outln!(
        "\n{} {} saved in {}",
        card.name,
        card.version,
        outcome.dir.display()
    );
    outln!(
        "  {:<12} {:>8} {:>10} {:>10} {:>6}",
        "candidate",
        "fit s",
        "valid AUC",
        "test AUC",
        "trees"
    );
    let auc = |a: Option<f64>| a.map_or_else(|| "n/a".to_owned(), |a| format!("{a:.4}"));
    for c in &card.candidates {
        outln!(
            "  {:<12} {:>8.1} {:>10} {:>10} {:>6}",
            c.name,
            c.fit_seconds,
            auc(c.valid_auc),
            auc(c.test_auc),
            c.trees.map_or_else(|| "-".to_owned(), |t| t.to_string())
        );
    }
    outln!("  {}", card.headline());
    for note in &card.notes {
        outln!("  note: {note}");
    }
    Ok(card)
}

/// What `fit` made of one spec.
pub(crate) enum Fitted {
    /// A new version was saved; `promotion` says what became of asking to promote it.
    Saved {
        card: Box<Card>,
        promotion: Promotion,
    },
    /// No version was saved.
    Failed { name: String, error: anyhow::Error },
}

/// Whether a saved version became the champion.
pub(crate) enum Promotion {
    /// Not asked for.
    NotAsked,
    /// It is the champion now.
    Promoted,
    /// Refused (the reasons are printed when it is).
    Refused,
}

/// Fits every spec in turn, promoting each new version that passes its gates when
/// `promote`. One spec's failure is reported and the next one fitted: a monthly retrain
/// of four models is not lost to one bad one.
pub(crate) async fn fit_specs(
    pool: &PgPool,
    registry: &Registry,
    specs: &[ModelSpec],
    promote: bool,
) -> Vec<Fitted> {
    let mut fitted = Vec::with_capacity(specs.len());
    for spec in specs {
        let card = match fit(pool, registry, spec).await {
            Ok(card) => card,
            Err(error) => {
                eprintln!("nudge-train: {error:#}");
                fitted.push(Fitted::Failed {
                    name: spec.name.clone(),
                    error,
                });
                continue;
            }
        };
        let promotion = if !promote {
            Promotion::NotAsked
        } else {
            match promote_version(registry, &card.name, &card.version) {
                Ok(()) => Promotion::Promoted,
                Err(refused) => {
                    outln!("  not promoted: {refused}");
                    Promotion::Refused
                }
            }
        };
        fitted.push(Fitted::Saved {
            card: Box::new(card),
            promotion,
        });
    }
    fitted
}

/// The closing table of a `fit` over several specs: each model card's headline and
/// what became of it.
pub(crate) fn print_fitted(fitted: &[Fitted]) {
    outln!("\nmodel cards:");
    for outcome in fitted {
        match outcome {
            Fitted::Saved { card, promotion } => {
                let promotion = match promotion {
                    Promotion::NotAsked => String::new(),
                    Promotion::Promoted => " → champion".to_owned(),
                    Promotion::Refused => " → not promoted".to_owned(),
                };
                outln!("  {}{promotion}", card.headline());
            }
            Fitted::Failed { name, error } => outln!("  {name}: not fitted: {error:#}"),
        }
    }
}

/// `nudge-train promote`: makes `version` the champion, or says why not.
pub(crate) fn promote_version(
    registry: &Registry,
    name: &str,
    version: &str,
) -> anyhow::Result<()> {
    train::promote(registry, name, version)?;
    outln!("{name}: {version} is now the champion");
    Ok(())
}

/// `nudge-train models list`: every model's versions, the champion marked, each with
/// its test AUC and whether it passed its gates.
pub(crate) fn list_models(registry: &Registry) -> anyhow::Result<()> {
    let names = registry.names()?;
    if names.is_empty() {
        outln!("no models in {}", registry.root().display());
    }
    for name in names {
        let champion = registry.champion(&name)?;
        outln!("{name}");
        for version in registry.versions(&name)?.into_iter().rev() {
            let card = train::read_card(registry, &name, &version).ok();
            let mark = if champion.as_deref() == Some(version.as_str()) {
                "*"
            } else {
                " "
            };
            let summary = card.map_or_else(
                || "no readable card".to_owned(),
                |c| {
                    format!(
                        "{} test AUC {} · {}",
                        c.champion_candidate,
                        c.test
                            .roc_auc
                            .map_or_else(|| "n/a".into(), |a| format!("{a:.4}")),
                        if c.gates.failures.is_empty() {
                            "gates passed"
                        } else {
                            "gates failed"
                        }
                    )
                },
            );
            outln!("  {mark} {version}  {summary}");
        }
    }
    Ok(())
}
