//! Shared look of every figure: the bundled font, sizes and the color palette.
//!
//! Text is drawn with DejaVu Sans compiled into the binary (see
//! `assets/fonts/LICENSE-DejaVu.txt`), so rendering needs no system fonts.

use std::sync::Once;

use plotters::style::{FontStyle, RGBColor, register_font};

/// Font family name under which the bundled font is registered.
pub const FONT: &str = "sans-serif";

/// Width and height in pixels of one panel; a figure is a grid of panels.
pub const PANEL_SIZE: (u32, u32) = (1080, 600);
/// Height in pixels of the figure title above the panels.
pub const TITLE_HEIGHT: u32 = 50;

pub const TITLE_FONT_SIZE: f64 = 26.0;
pub const PANEL_TITLE_FONT_SIZE: f64 = 21.0;
pub const AXIS_LABEL_FONT_SIZE: f64 = 18.0;
pub const TICK_FONT_SIZE: f64 = 15.0;
pub const LEGEND_FONT_SIZE: f64 = 15.0;

/// Stroke width in pixels of data lines.
pub const LINE_WIDTH: u32 = 2;

/// Tableau 10, a palette that stays distinguishable for common color-vision deficiencies.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Color of the marker lines (T1, reference levels).
pub const MARKER_COLOR: RGBColor = RGBColor(60, 60, 60);

/// Returns the `index`-th palette color, cycling after ten.
pub fn color(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

/// Returns a darker shade of the `index`-th palette color, for dashed theory curves: drawn
/// over a measured curve of the same hue, its dashes stay visible where the two agree.
pub fn dark_color(index: usize) -> RGBColor {
    let RGBColor(red, green, blue) = color(index);
    let darken = |channel: u8| (f64::from(channel) * 0.55).round() as u8;
    RGBColor(darken(red), darken(green), darken(blue))
}

/// Registers the bundled font with plotters; later calls do nothing.
pub fn register_bundled_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        if register_font(FONT, FontStyle::Normal, bytes).is_err() {
            // The bytes are fixed at compile time and the unit test below parses them, so this
            // fails only if the asset is replaced by a file that is not a TrueType font.
            panic!("assets/fonts/DejaVuSans.ttf is not a valid TrueType font");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_font_registers() {
        let bytes: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        assert!(register_font(FONT, FontStyle::Normal, bytes).is_ok());
    }
}
