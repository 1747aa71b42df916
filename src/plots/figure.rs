//! Figure descriptions, independent of drawing: panels of curves with axes, marker lines and
//! legends. The figure builders fill these, and [`super::render`] draws them.

use super::style::{LINE_WIDTH, PANEL_SIZE, TITLE_HEIGHT};

/// Mapping from data values to positions along an axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Base-10 logarithmic; non-positive values are left out of the plot.
    Log,
}

impl Scale {
    /// Maps a data value to plot coordinates: itself, or log10 of it. Returns `None` for a
    /// value the axis cannot show (non-finite, or non-positive on a log axis).
    pub fn to_plot(self, value: f64) -> Option<f64> {
        match self {
            _ if !value.is_finite() => None,
            Scale::Linear => Some(value),
            Scale::Log if value > 0.0 => Some(value.log10()),
            Scale::Log => None,
        }
    }

    /// Maps a plot coordinate back to the data value.
    pub fn from_plot(self, coordinate: f64) -> f64 {
        match self {
            Scale::Linear => coordinate,
            Scale::Log => 10f64.powf(coordinate),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Axis {
    /// Axis title, with the unit.
    pub label: String,
    pub scale: Scale,
    /// Shown range in data units; `None` fits the data.
    pub range: Option<(f64, f64)>,
    /// Labelled ticks in data units; `None` chooses round values.
    pub ticks: Option<Vec<f64>>,
}

impl Axis {
    pub fn linear(label: impl Into<String>) -> Axis {
        Axis {
            label: label.into(),
            scale: Scale::Linear,
            range: None,
            ticks: None,
        }
    }

    pub fn log(label: impl Into<String>) -> Axis {
        Axis {
            label: label.into(),
            scale: Scale::Log,
            range: None,
            ticks: None,
        }
    }
}

/// Line style of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stroke {
    Solid,
    /// Dashed line, for predictions and baselines.
    Dashed,
    /// Unconnected circles, for scattered measurements.
    Points,
}

/// One curve: (x, y) points in data units, with a legend label (an empty label leaves it
/// out of the legend).
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Index into the shared palette.
    pub color: usize,
    pub stroke: Stroke,
    /// Line width in pixels.
    pub width: u32,
}

impl Series {
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>, color: usize) -> Series {
        Series {
            label: label.into(),
            points,
            color,
            stroke: Stroke::Solid,
            width: LINE_WIDTH,
        }
    }

    pub fn with_stroke(mut self, stroke: Stroke) -> Series {
        self.stroke = stroke;
        self
    }

    /// Widens the line so that a series drawn after it on the same values leaves it visible
    /// as a border (for pairs that symmetry makes equal, such as groups I2 and I3).
    pub fn widened(mut self) -> Series {
        self.width = 2 * LINE_WIDTH + 1;
        self
    }
}

/// A labelled horizontal or vertical line across the whole panel.
#[derive(Clone, Debug)]
pub struct Marker {
    /// Position in data units of the axis it crosses.
    pub value: f64,
    /// Legend label; `None` leaves the line out of the legend.
    pub label: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Panel {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    /// Vertical lines, such as the end of Phase 1 (T1).
    pub vertical: Vec<Marker>,
    /// Horizontal reference levels, such as zero or the bounds of a predicted interval.
    pub horizontal: Vec<Marker>,
    /// Legend lines that explain a line style shared by several series, drawn in gray.
    pub notes: Vec<(String, Stroke)>,
}

impl Panel {
    pub fn new(title: impl Into<String>, x: Axis, y: Axis) -> Panel {
        Panel {
            title: title.into(),
            x,
            y,
            series: Vec::new(),
            vertical: Vec::new(),
            horizontal: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds the vertical line at T1 (end of Phase 1), when the run reached it.
    pub fn mark_t1(&mut self, t1: Option<f64>) {
        if let Some(t1) = t1 {
            self.vertical.push(Marker {
                value: t1,
                label: Some(format!("T1 = {} (all samples correct)", format_number(t1))),
            });
        }
    }
}

/// A grid of panels saved under one file name (without extension).
#[derive(Clone, Debug)]
pub struct Figure {
    pub name: String,
    pub title: String,
    /// Grid shape (rows, columns); the panels fill it row by row.
    pub grid: (usize, usize),
    pub panels: Vec<Panel>,
}

impl Figure {
    /// Size in pixels of the image: one [`PANEL_SIZE`] per grid cell plus the title.
    pub fn size(&self) -> (u32, u32) {
        let (rows, columns) = self.grid;
        (
            PANEL_SIZE.0 * columns as u32,
            PANEL_SIZE.1 * rows as u32 + TITLE_HEIGHT,
        )
    }
}

/// Formats a number for tick labels and legends: plain decimals between 1e-3 and 1e4 with
/// at most four significant digits, scientific notation outside.
pub fn format_number(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let magnitude = value.abs();
    if (1e-3..1e4).contains(&magnitude) {
        let decimals = (3 - magnitude.log10().floor() as i32).max(0) as usize;
        let text = format!("{value:.decimals$}");
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        }
    } else {
        let text = format!("{value:.2e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        format!("{mantissa}e{exponent}")
    }
}

/// A column of a table: the value it takes in one row.
pub type Column<T> = fn(&T) -> f64;

/// Points (x, y) from two columns of a table, in the order given.
pub fn columns<T>(rows: &[T], x: impl Fn(&T) -> f64, y: impl Fn(&T) -> f64) -> Vec<(f64, f64)> {
    rows.iter().map(|row| (x(row), y(row))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_scale_drops_non_positive() {
        assert_eq!(Scale::Log.to_plot(100.0), Some(2.0));
        assert_eq!(Scale::Log.to_plot(0.0), None);
        assert_eq!(Scale::Log.to_plot(-1.0), None);
        assert_eq!(Scale::Log.to_plot(f64::NAN), None);
        assert_eq!(Scale::Linear.to_plot(f64::INFINITY), None);
        assert_eq!(Scale::Linear.to_plot(-3.5), Some(-3.5));
    }

    #[test]
    fn log_scale_round_trips() {
        for value in [1e-7, 0.37, 1.0, 42.0, 3e9] {
            let back = Scale::Log.from_plot(Scale::Log.to_plot(value).unwrap());
            assert!((back / value - 1.0).abs() < 1e-12, "{value} -> {back}");
        }
    }

    #[test]
    fn numbers_format_compactly() {
        assert_eq!(format_number(0.15), "0.15");
        assert_eq!(format_number(1.0), "1");
        assert_eq!(format_number(1000.0), "1000");
        assert_eq!(format_number(0.001), "0.001");
        assert_eq!(format_number(1e-4), "1e-4");
        assert_eq!(format_number(2.5e7), "2.5e7");
        assert_eq!(format_number(-0.457377), "-0.4574");
        assert_eq!(format_number(0.0), "0");
    }

    #[test]
    fn figure_size_counts_panels() {
        let figure = Figure {
            name: "x".into(),
            title: "x".into(),
            grid: (2, 3),
            panels: Vec::new(),
        };
        assert_eq!(
            figure.size(),
            (3 * PANEL_SIZE.0, 2 * PANEL_SIZE.1 + TITLE_HEIGHT)
        );
    }
}
