//! Renders every figure kind from a tiny run and a synthetic sweep table, and checks that
//! the PNG and SVG files are well formed, have the expected size and contain drawn text and
//! curves.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use attnflow::config::Config;
use attnflow::experiment::{self, RunOptions};
use attnflow::plots::{self, PREDICTIONS, RunData, style};

/// A run of well under a second: reduced engine, six samples of length 4, until t = 40.
const TINY_CONFIG: &str = r#"
seed = 3

[task]
n = 6
L = 4
fillers = "distinct"
n_test = 6

[model]
m = 16
m1 = 8

[init]
scheme = "theory"
c0 = 0.5
c1 = 0.5

[train]
engine = "reduced"
integrator = "dopri5"
t_end = 40.0

[record]
grid = "log"
points = 40
t_first = 1e-3
"#;

/// Runs the tiny config into `dir`.
fn tiny_run(dir: &Path) {
    let config = Config::from_toml(TINY_CONFIG).unwrap();
    let options = RunOptions {
        resume: false,
        progress: false,
        save_inputs: false,
    };
    experiment::execute(&config, dir, &options, &AtomicBool::new(false)).unwrap();
}

/// Writes a predictions.csv over the run's times, NaN before `t1` where the theory curves
/// are undefined.
fn write_predictions(dir: &Path, t1: f64) {
    let data = RunData::read(dir).unwrap();
    let mut text = String::from(
        "t,baseline_loss,baseline_gamma_1,baseline_gamma_2,baseline_gamma_3,R_star,\
         loss_law_inverse\n",
    );
    for row in &data.trajectory {
        let after = row.t >= t1;
        let r_star = if after {
            "1.4".to_string()
        } else {
            "NaN".into()
        };
        let law = if after {
            format!("{}", 1.0 / row.loss)
        } else {
            "NaN".into()
        };
        text += &format!(
            "{},{},{},{},{},{r_star},{law}\n",
            row.t,
            1.2 * row.loss,
            0.9 * row.gamma_1,
            0.9 * row.gamma_2,
            0.9 * row.gamma_3
        );
    }
    std::fs::write(dir.join(PREDICTIONS), text).unwrap();
}

/// Reads and decodes a PNG, returning its width, height and RGB pixels.
fn read_png(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() > 1000, "{} is nearly empty", path.display());
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} signature",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR", "{} first chunk", path.display());
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());

    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buffer).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{} is not RGB", path.display());
    let pixels = buffer[..info.buffer_size()]
        .chunks(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    assert_eq!((info.width, info.height), (width, height));
    (width, height, pixels)
}

/// Checks the PNG and SVG pair of `figure` in `dir`.
fn check_figure(dir: &Path, figure: &plots::Figure) {
    let png = dir.join(format!("{}.png", figure.name));
    let (width, height, pixels) = read_png(&png);
    assert_eq!((width, height), figure.size(), "{}", png.display());

    // The title band holds only text, so dark pixels there show that the font rendered.
    let title_band = &pixels[..(width * style::TITLE_HEIGHT) as usize];
    let dark = title_band
        .iter()
        .filter(|p| p.iter().all(|c| *c < 100))
        .count();
    assert!(
        dark > 100,
        "{}: no title text drawn ({dark} dark pixels)",
        png.display()
    );
    // Curves are drawn in palette colors; text, axes and markers are gray.
    let saturated = |p: &&[u8; 3]| p.iter().max().unwrap() - p.iter().min().unwrap() > 60;
    let colored = pixels.iter().filter(saturated).count();
    assert!(
        colored > 500,
        "{}: no curve drawn ({colored} pixels)",
        png.display()
    );

    let svg_path = dir.join(format!("{}.svg", figure.name));
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let head = svg.trim_start();
    assert!(
        head.starts_with("<svg") || head.starts_with("<?xml"),
        "{} starts with {:?}",
        svg_path.display(),
        &head[..head.len().min(40)]
    );
    assert!(
        svg.trim_end().ends_with("</svg>"),
        "{} is cut off",
        svg_path.display()
    );
    assert!(
        svg.contains(&figure.title),
        "{} has no title text",
        svg_path.display()
    );
    assert!(
        svg.contains(&format!("width=\"{width}\"")),
        "{}",
        svg_path.display()
    );
}

#[test]
fn run_figures_render_with_predictions() {
    let run = tempfile::tempdir().unwrap();
    tiny_run(run.path());
    let t1 = RunData::read(run.path())
        .unwrap()
        .t1
        .expect("tiny run reaches T1");
    write_predictions(run.path(), t1);

    let out = run.path().join("figures");
    let plotted = plots::plot_run(run.path(), &out).unwrap();
    assert!(plotted.predictions_found);

    let data = RunData::read(run.path()).unwrap();
    let figures = plots::run_figures(&data);
    assert_eq!(figures.len(), 5);
    assert_eq!(plotted.files.len(), 2 * figures.len());
    for figure in &figures {
        check_figure(&out, figure);
    }
}

#[test]
fn run_figures_render_without_predictions() {
    let run = tempfile::tempdir().unwrap();
    tiny_run(run.path());
    let out = run.path().join("figures");
    let plotted = plots::plot_run(run.path(), &out).unwrap();
    assert!(!plotted.predictions_found);
    let data = RunData::read(run.path()).unwrap();
    for figure in &plots::run_figures(&data) {
        check_figure(&out, figure);
    }
}

#[test]
fn sweep_figure_renders() {
    let dir = tempfile::tempdir().unwrap();
    let mut table = String::from("m,seed,t1,t1_kappa,c_over_beta\n");
    for (i, m) in [64, 256, 1024, 4096].iter().enumerate() {
        for seed in 0..3 {
            let spread = 1.0 + 0.1 * seed as f64;
            let t1_kappa = 2.0 * spread / (1.0 + i as f64 * 0.05);
            table += &format!("{m},{seed},0.1,{t1_kappa},{}\n", 0.6 * spread);
        }
    }
    // A run that never reached T1 is left out of the log-log plot, not an error.
    table += "8192,0,,NaN,NaN\n";
    let runs_csv = dir.path().join("runs.csv");
    std::fs::write(&runs_csv, table).unwrap();

    let out = dir.path().join("figures");
    let files = plots::plot_sweep(&runs_csv, &out).unwrap();
    assert_eq!(files.len(), 2);
    let runs = plots::inputs::read_sweep(&runs_csv).unwrap();
    check_figure(&out, &plots::sweep_figure(&runs));
}

/// Runs `attnflow plot RUN --out OUT`.
fn plot_command(run: &Path, out: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_attnflow"))
        .arg("plot")
        .arg(run)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn plot_run_reports_missing_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let error = plots::plot_run(dir.path(), &dir.path().join("figures")).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("trajectory.csv not found"), "{message}");
}

/// A run that recorded only t = 0 has nothing to show on a log time axis, so the plot
/// command stops with an error that names the fix instead of drawing empty axes.
#[test]
fn initial_row_only_is_error() {
    let run = tempfile::tempdir().unwrap();
    tiny_run(run.path());

    // Keep only the header and the t = 0 row, and drop T1.
    let trajectory = run.path().join("trajectory.csv");
    let text = std::fs::read_to_string(&trajectory).unwrap();
    let first_two: Vec<&str> = text.lines().take(2).collect();
    std::fs::write(&trajectory, first_two.join("\n") + "\n").unwrap();
    std::fs::write(run.path().join("summary.json"), r#"{"t1": null}"#).unwrap();

    let out = run.path().join("figures");
    let output = plot_command(run.path(), &out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("has only the t = 0 row"), "{stderr}");
    assert!(stderr.contains("raise train.max_steps"), "{stderr}");
    assert!(!out.join("loss.png").exists());
}

#[test]
fn plot_command_notes_missing_predictions() {
    let run = tempfile::tempdir().unwrap();
    tiny_run(run.path());
    let out = run.path().join("pictures");

    let output = plot_command(run.path(), &out);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("run `attnflow check"), "{stdout}");
    assert!(out.join("loss.png").exists());
    assert!(out.join("loss.svg").exists());

    write_predictions(run.path(), 0.0);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_attnflow"))
        .arg("plot")
        .arg(run.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(!stdout.contains("attnflow check"), "{stdout}");
    assert!(run.path().join("figures").join("balance.png").exists());
}

/// A failed run keeps its trajectory but writes no summary.json. Its rows are still drawn,
/// without T1, and the plot command prints a note with the reason.
#[test]
fn run_without_summary_is_drawn() {
    let run = tempfile::tempdir().unwrap();
    tiny_run(run.path());
    std::fs::remove_file(run.path().join("summary.json")).unwrap();
    let out = run.path().join("figures");

    let output = plot_command(run.path(), &out);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("no summary.json"), "{stdout}");
    assert!(stdout.contains("drawn without T1"), "{stdout}");
    assert!(out.join("loss.png").exists());
}
