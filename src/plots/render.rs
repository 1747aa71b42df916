//! Draws a [`Figure`] with plotters and writes it as PNG and SVG.
//!
//! Log axes are drawn as linear axes over log10 of the data, with tick labels mapped back to
//! data units. Points that an axis cannot show (NaN, infinite, non-positive on a log axis, or
//! outside an explicit range) break the line there instead of being drawn.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::element::ComposedElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::figure::{Axis, Figure, Panel, Scale, Series, Stroke};
use super::style::{self, FONT};
use super::ticks::{TickedRange, Ticks, ticks};
use crate::error::Error;

/// Writes `figure` as `NAME.png` and `NAME.svg` into `out_dir` and returns both paths.
pub fn write_figure(figure: &Figure, out_dir: &Path) -> Result<Vec<PathBuf>, Error> {
    style::register_bundled_font();
    let size = figure.size();

    let png = out_dir.join(format!("{}.png", figure.name));
    draw_figure(BitMapBackend::new(&png, size).into_drawing_area(), figure)
        .map_err(|message| render_error(&png, message))?;

    let svg = out_dir.join(format!("{}.svg", figure.name));
    draw_figure(SVGBackend::new(&svg, size).into_drawing_area(), figure)
        .map_err(|message| render_error(&svg, message))?;

    Ok(vec![png, svg])
}

fn render_error(path: &Path, message: String) -> Error {
    Error::io(
        path,
        std::io::Error::other(format!("failed to draw the figure: {message}")),
    )
}

fn draw_figure<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    figure: &Figure,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title_style = (FONT, style::TITLE_FONT_SIZE).into_font();
    let body = root
        .titled(&figure.title, title_style)
        .map_err(|e| e.to_string())?;

    // One legend width for all panels keeps the plots of a column aligned.
    let panels = body.split_evenly(figure.grid);
    let mut legend = 0;
    for (area, panel) in panels.iter().zip(&figure.panels) {
        let width = legend_width(area, &legend_entries(panel)).map_err(|e| e.to_string())?;
        legend = legend.max(width);
    }
    for (area, panel) in panels.iter().zip(&figure.panels) {
        draw_panel(area, panel, legend).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// The shown interval of an axis in plot coordinates (log10 for log axes).
#[derive(Clone, Copy, Debug, PartialEq)]
struct PlotRange {
    low: f64,
    high: f64,
}

impl PlotRange {
    fn contains(&self, coordinate: f64) -> bool {
        let slack = 1e-9 * (self.high - self.low);
        coordinate >= self.low - slack && coordinate <= self.high + slack
    }
}

/// Chooses the shown interval of an axis: the explicit range, or the span of `values` (data
/// units) widened by 4% on each side. An empty or single-valued span gets a unit-wide range.
fn plot_range(axis: &Axis, values: impl Iterator<Item = f64>) -> PlotRange {
    if let Some((low, high)) = axis.range {
        if let (Some(low), Some(high)) = (axis.scale.to_plot(low), axis.scale.to_plot(high)) {
            return PlotRange { low, high };
        }
    }

    let (low, high) = values
        .filter_map(|value| axis.scale.to_plot(value))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| {
            (low.min(v), high.max(v))
        });
    if low > high {
        return PlotRange {
            low: 0.0,
            high: 1.0,
        };
    }
    if high - low < 1e-12 * (1.0 + low.abs()) {
        return PlotRange {
            low: low - 0.5,
            high: high + 0.5,
        };
    }
    let pad = 0.04 * (high - low);
    PlotRange {
        low: low - pad,
        high: high + pad,
    }
}

/// Returns the axis's own ticks inside the range when it has them, round values otherwise.
fn axis_ticks(axis: &Axis, range: PlotRange) -> Ticks {
    match &axis.ticks {
        Some(values) => Ticks {
            major: values
                .iter()
                .filter_map(|v| axis.scale.to_plot(*v))
                .filter(|c| range.contains(*c))
                .collect(),
            minor: Vec::new(),
        },
        None => ticks(axis.scale, range.low, range.high),
    }
}

/// Splits a series into the runs of consecutive points that both axes can show inside their
/// ranges, in plot coordinates.
fn segments(
    points: &[(f64, f64)],
    x: (Scale, PlotRange),
    y: (Scale, PlotRange),
) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    let mut current = Vec::new();
    for &(px, py) in points {
        let shown = match (x.0.to_plot(px), y.0.to_plot(py)) {
            (Some(cx), Some(cy)) if x.1.contains(cx) && y.1.contains(cy) => Some((cx, cy)),
            _ => None,
        };
        match shown {
            Some(point) => current.push(point),
            None if !current.is_empty() => runs.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    legend_width: u32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (plot_area, legend_area) = area.split_horizontally(area.dim_in_pixel().0 - legend_width);

    let x_scale = panel.x.scale;
    let y_scale = panel.y.scale;
    // Only points that both axes can show decide the ranges.
    let shown_points = || {
        panel
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(x, y)| x_scale.to_plot(*x).is_some() && y_scale.to_plot(*y).is_some())
    };
    let x_values = shown_points()
        .map(|p| p.0)
        .chain(panel.vertical.iter().map(|m| m.value));
    let x_range = plot_range(&panel.x, x_values);
    let y_values = shown_points()
        .map(|p| p.1)
        .chain(panel.horizontal.iter().map(|m| m.value));
    let y_range = plot_range(&panel.y, y_values);

    let x_ticks = axis_ticks(&panel.x, x_range);
    let y_ticks = axis_ticks(&panel.y, y_range);
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(&panel.title, (FONT, style::PANEL_TITLE_FONT_SIZE))
        .margin(12)
        .x_label_area_size(58)
        .y_label_area_size(84)
        .build_cartesian_2d(
            TickedRange {
                low: x_range.low,
                high: x_range.high,
                ticks: x_ticks,
            },
            TickedRange {
                low: y_range.low,
                high: y_range.high,
                ticks: y_ticks,
            },
        )?;

    let x_format = move |c: &f64| tick_label(x_scale, *c);
    let y_format = move |c: &f64| tick_label(y_scale, *c);
    chart
        .configure_mesh()
        .x_desc(panel.x.label.as_str())
        .y_desc(panel.y.label.as_str())
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .label_style((FONT, style::TICK_FONT_SIZE))
        .axis_desc_style((FONT, style::AXIS_LABEL_FONT_SIZE))
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(210, 210, 210))
        .draw()?;

    let marker_style = style::MARKER_COLOR.stroke_width(1);
    for marker in &panel.horizontal {
        if let Some(y) = y_scale
            .to_plot(marker.value)
            .filter(|y| y_range.contains(*y))
        {
            let line = vec![(x_range.low, y), (x_range.high, y)];
            chart.draw_series(DashedLineSeries::new(line, 6, 4, marker_style))?;
        }
    }
    for marker in &panel.vertical {
        if let Some(x) = x_scale
            .to_plot(marker.value)
            .filter(|x| x_range.contains(*x))
        {
            let line = vec![(x, y_range.low), (x, y_range.high)];
            chart.draw_series(DashedLineSeries::new(line, 6, 4, marker_style))?;
        }
    }
    for series in &panel.series {
        let runs = segments(&series.points, (x_scale, x_range), (y_scale, y_range));
        draw_series(&mut chart, series, runs)?;
    }

    draw_legend(&legend_area, &legend_entries(panel))
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<TickedRange, TickedRange>>;

fn draw_series<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    series: &Series,
    runs: Vec<Vec<(f64, f64)>>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let color = series_color(series);
    let line = color.stroke_width(series.width);
    for run in runs {
        // A line through one point draws nothing, so an isolated point becomes a dot.
        if run.len() == 1 && series.stroke != Stroke::Points {
            let dot = Circle::new(run[0], series.width + 1, color.filled());
            chart.draw_series(std::iter::once(dot))?;
            continue;
        }
        match series.stroke {
            Stroke::Solid => chart.draw_series(LineSeries::new(run, line))?,
            Stroke::Dashed => chart.draw_series(DashedLineSeries::new(run, 9, 5, line))?,
            Stroke::Points => chart.draw_series(
                run.into_iter()
                    .map(|point| Circle::new(point, 4, color.mix(0.7).filled())),
            )?,
        };
    }
    Ok(())
}

/// Dashed series are theory curves and get the darker shade of their color.
fn series_color(series: &Series) -> RGBColor {
    match series.stroke {
        Stroke::Dashed => style::dark_color(series.color),
        Stroke::Solid | Stroke::Points => style::color(series.color),
    }
}

/// One legend line: the label and how its sample is drawn.
struct LegendEntry<'a> {
    label: &'a str,
    stroke: Stroke,
    style: ShapeStyle,
}

/// Legend entries: labelled markers first, then every labelled series with at least one
/// point, then the notes.
fn legend_entries(panel: &Panel) -> Vec<LegendEntry<'_>> {
    let marker_style = style::MARKER_COLOR.stroke_width(1);
    let markers = panel.vertical.iter().chain(&panel.horizontal);
    let marker_entries = markers.filter_map(|marker| {
        marker.label.as_deref().map(|label| LegendEntry {
            label,
            stroke: Stroke::Dashed,
            style: marker_style,
        })
    });
    let series_entries = panel
        .series
        .iter()
        .filter(|series| !series.points.is_empty() && !series.label.is_empty())
        .map(|series| LegendEntry {
            label: &series.label,
            stroke: series.stroke,
            style: series_color(series).stroke_width(series.width),
        });
    let note_entries = panel.notes.iter().map(|(label, stroke)| LegendEntry {
        label,
        stroke: *stroke,
        style: style::MARKER_COLOR.stroke_width(style::LINE_WIDTH),
    });
    marker_entries
        .chain(series_entries)
        .chain(note_entries)
        .collect()
}

/// Width in pixels of the legend column: the widest label plus its sample and padding, at
/// most half the panel. Zero without entries.
fn legend_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry<'_>],
) -> Result<u32, DrawingAreaErrorKind<DB::ErrorType>> {
    if entries.is_empty() {
        return Ok(0);
    }
    let font = TextStyle::from((FONT, style::LEGEND_FONT_SIZE).into_font());
    let mut widest = 0;
    for entry in entries {
        widest = widest.max(area.estimate_text_size(entry.label, &font)?.0);
    }
    let width = widest + LEGEND_SAMPLE_WIDTH + 3 * LEGEND_PADDING;
    Ok(width.min(area.dim_in_pixel().0 / 2))
}

/// Width in pixels of the line sample before a legend label.
const LEGEND_SAMPLE_WIDTH: u32 = 28;
/// Padding in pixels around and inside the legend column.
const LEGEND_PADDING: u32 = 10;
/// Height in pixels of one legend line.
const LEGEND_LINE_HEIGHT: i32 = 24;
/// Distance in pixels from the top of the panel to the first legend line, below the caption.
const LEGEND_TOP: i32 = 60;

/// Draws the legend as a column beside the plot, so that it never hides data.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry<'_>],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let font = TextStyle::from((FONT, style::LEGEND_FONT_SIZE).into_font())
        .pos(Pos::new(HPos::Left, VPos::Center));
    let left = LEGEND_PADDING as i32;
    let sample = LEGEND_SAMPLE_WIDTH as i32;
    for (row, entry) in entries.iter().enumerate() {
        let y = LEGEND_TOP + row as i32 * LEGEND_LINE_HEIGHT;
        area.draw(&legend_sample((left, y), sample - 6, entry))?;
        area.draw(&Text::new(entry.label, (left + sample, y), font.clone()))?;
    }
    Ok(())
}

type LegendSample<DB> =
    ComposedElement<(i32, i32), DB, PathElement<(i32, i32)>, PathElement<(i32, i32)>>;

/// Builds the sample drawn before a legend label, `width` pixels wide: a line, two dashes,
/// or a dot.
fn legend_sample<DB: DrawingBackend>(
    at: (i32, i32),
    width: i32,
    entry: &LegendEntry<'_>,
) -> LegendSample<DB> {
    let half = width / 2;
    let (first, second, style) = match entry.stroke {
        Stroke::Solid => ((0, half), (half, width), entry.style),
        Stroke::Dashed => ((0, half - 3), (half + 3, width), entry.style),
        Stroke::Points => (
            (half - 2, half + 2),
            (half - 2, half + 2),
            entry.style.stroke_width(8),
        ),
    };
    EmptyElement::at(at)
        + PathElement::new(vec![(first.0, 0), (first.1, 0)], style)
        + PathElement::new(vec![(second.0, 0), (second.1, 0)], style)
}

/// Tick label of a plot coordinate, in data units.
fn tick_label(scale: Scale, coordinate: f64) -> String {
    let value = scale.from_plot(coordinate);
    let rounded = match scale {
        // Ticks at integer powers of ten print exactly (1e-3, not 9.999e-4).
        Scale::Log if (coordinate - coordinate.round()).abs() < 1e-9 => {
            10f64.powi(coordinate.round() as i32)
        }
        _ if coordinate.abs() < 1e-12 => 0.0,
        _ => value,
    };
    super::figure::format_number(rounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: PlotRange = PlotRange {
        low: 0.0,
        high: 10.0,
    };

    #[test]
    fn segments_break_at_nan_and_log_zero() {
        let points = [
            (1.0, 1.0),
            (2.0, 2.0),
            (3.0, f64::NAN),
            (4.0, 4.0),
            (5.0, 0.0),
            (6.0, 6.0),
            (7.0, 7.0),
        ];
        let runs = segments(
            &points,
            (Scale::Linear, UNIT),
            (
                Scale::Log,
                PlotRange {
                    low: -1.0,
                    high: 1.0,
                },
            ),
        );
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0], vec![(1.0, 0.0), (2.0, 2f64.log10())]);
        assert_eq!(runs[1].len(), 1);
        assert_eq!(runs[2].len(), 2);
    }

    #[test]
    fn segments_drop_points_outside_range() {
        let points = [(1.0, 1.0), (2.0, 50.0), (3.0, 3.0)];
        let runs = segments(&points, (Scale::Linear, UNIT), (Scale::Linear, UNIT));
        assert_eq!(runs, vec![vec![(1.0, 1.0)], vec![(3.0, 3.0)]]);
    }

    #[test]
    fn range_fits_finite_values() {
        let axis = Axis::log("t");
        let range = plot_range(&axis, [0.0, 1e-3, f64::NAN, 1e3].into_iter());
        assert!((range.low - (-3.24)).abs() < 1e-12, "{range:?}");
        assert!((range.high - 3.24).abs() < 1e-12, "{range:?}");
    }

    #[test]
    fn range_of_nothing_is_unit() {
        let axis = Axis::linear("y");
        let range = plot_range(&axis, [f64::NAN].into_iter());
        assert_eq!(
            range,
            PlotRange {
                low: 0.0,
                high: 1.0
            }
        );
        let flat = plot_range(&axis, [2.0, 2.0].into_iter());
        assert_eq!(
            flat,
            PlotRange {
                low: 1.5,
                high: 2.5
            }
        );
    }

    #[test]
    fn explicit_range_wins() {
        let mut axis = Axis::log("ratio");
        axis.range = Some((0.1, 10.0));
        let range = plot_range(&axis, [1e-9, 1e9].into_iter());
        assert_eq!(
            range,
            PlotRange {
                low: -1.0,
                high: 1.0
            }
        );
    }

    #[test]
    fn log_ticks_print_powers_exactly() {
        assert_eq!(tick_label(Scale::Log, -3.0 + 1e-12), "0.001");
        assert_eq!(tick_label(Scale::Log, 6.0), "1e6");
        assert_eq!(tick_label(Scale::Linear, 1e-17), "0");
    }
}
