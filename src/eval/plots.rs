//! The report's figures, drawn with plotters into an RGB buffer and written as
//! PNG atomically: overlaid histograms with a threshold line (s_reid and
//! s_align before and after filtering, the paper's Fig. 4), ROC curves, and
//! labelled image grids (sample grids, Grad-CAM++ overlays). Text uses the
//! DejaVu Sans font shipped in `assets/fonts`, so figures look the same on
//! every machine and need no system fonts.

use crate::data::Image;
use crate::eval::metrics::RocPoint;
use crate::{Error, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// The family name the shipped DejaVu Sans is registered under; pass it in plotters text styles.
pub const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Colours of successive series (colour-blind-safe Okabe–Ito).
pub const SERIES_COLOURS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font compiled into the binary; failure would be a build defect.
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).unwrap_or_else(|_| panic!("the shipped font must parse"));
    });
}

fn plot_err<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::file(path, format!("drawing failed: {e:?}"))
}

/// Encode an RGB buffer as PNG and write it atomically.
fn write_png(path: &Path, buf: &[u8], width: u32, height: u32) -> Result<()> {
    use ::image::ImageEncoder;
    let mut out = Vec::new();
    ::image::codecs::png::PngEncoder::new(&mut out)
        .write_image(buf, width, height, ::image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::file(path, format!("PNG encoding failed: {e}")))?;
    crate::io::write_atomic_bytes(path, &out)
}

/// Draw on a fresh white `width × height` canvas with `draw` (the shipped font
/// registered as [`FONT`]), then write it to `path` as PNG, atomically.
pub fn with_canvas(
    path: &Path,
    width: u32,
    height: u32,
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    register_font();
    let mut buf = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err(path))?;
        draw(&root)?;
        root.present().map_err(plot_err(path))?;
    }
    write_png(path, &buf, width, height)
}

/// One series of a histogram.
pub struct HistogramSeries<'a> {
    /// Legend text.
    pub label: String,
    /// The values.
    pub values: &'a [f64],
}

/// Overlaid histograms of the series over `range` in `bins` bins, as fractions of each series (so sets of
/// different sizes compare), with an optional vertical threshold line and its label.
pub fn histogram_png(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[HistogramSeries],
    range: (f64, f64),
    bins: usize,
    threshold: Option<(f64, &str)>,
) -> Result<()> {
    let bins = bins.max(1);
    let width = (range.1 - range.0) / bins as f64;
    let counts: Vec<Vec<f64>> = series
        .iter()
        .map(|s| {
            let mut c = vec![0.0; bins];
            for &v in s.values.iter().filter(|v| v.is_finite()) {
                let b = (((v - range.0) / width).floor().max(0.0) as usize).min(bins - 1);
                c[b] += 1.0;
            }
            let n = s.values.len().max(1) as f64;
            c.iter().map(|x| x / n).collect()
        })
        .collect();
    // Headroom above the tallest bar keeps the legend clear of the data.
    let y_max = counts.iter().flatten().cloned().fold(0.0, f64::max).max(1e-3) * 1.45;
    with_canvas(path, 900, 560, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 26))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(range.0..range.1, 0.0..y_max)
            .map_err(plot_err(path))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc("fraction of images")
            .label_style((FONT, 16))
            .axis_desc_style((FONT, 18))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(plot_err(path))?;
        for (k, (s, c)) in series.iter().zip(&counts).enumerate() {
            let colour = SERIES_COLOURS[k % SERIES_COLOURS.len()];
            let n = s.values.len();
            chart
                .draw_series(c.iter().enumerate().map(|(b, &h)| {
                    let x0 = range.0 + b as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width, h)], colour.mix(0.35).filled())
                }))
                .map_err(plot_err(path))?
                .label(format!("{} (n = {n})", s.label))
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.mix(0.6).filled()));
            // The outline keeps overlapping bars readable.
            let outline: Vec<(f64, f64)> = c
                .iter()
                .enumerate()
                .flat_map(|(b, &h)| {
                    let x0 = range.0 + b as f64 * width;
                    [(x0, h), (x0 + width, h)]
                })
                .collect();
            chart.draw_series(LineSeries::new(outline, colour.stroke_width(2))).map_err(plot_err(path))?;
        }
        if let Some((t, label)) = threshold {
            let red = RGBColor(200, 0, 0);
            chart
                .draw_series(LineSeries::new(vec![(t, 0.0), (t, y_max)], red.stroke_width(2)))
                .map_err(plot_err(path))?
                .label(label.to_string())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], red.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 16))
            .position(SeriesLabelPosition::UpperMiddle)
            .draw()
            .map_err(plot_err(path))
    })
}

/// One ROC curve with its legend text.
pub struct RocSeries {
    /// Legend text (name and AUC).
    pub label: String,
    /// The curve.
    pub points: Vec<RocPoint>,
}

/// Panels of ROC curves side by side (one per title), each with the chance diagonal.
pub fn roc_png(path: &Path, title: &str, panels: &[(String, Vec<RocSeries>)]) -> Result<()> {
    let n = panels.len().max(1);
    let panel_w = 480u32;
    with_canvas(path, panel_w * n as u32, 560, |root| {
        let (top, body) = root.split_vertically(50);
        top.titled(title, (FONT, 26)).map_err(plot_err(path))?;
        for (area, (panel_title, curves)) in body.split_evenly((1, n)).iter().zip(panels) {
            let mut chart = ChartBuilder::on(area)
                .caption(panel_title, (FONT, 20))
                .margin(14)
                .x_label_area_size(45)
                .y_label_area_size(55)
                .build_cartesian_2d(0.0..1.0, 0.0..1.0)
                .map_err(plot_err(path))?;
            chart
                .configure_mesh()
                .x_desc("false-positive rate")
                .y_desc("true-positive rate")
                .label_style((FONT, 14))
                .axis_desc_style((FONT, 16))
                .light_line_style(TRANSPARENT)
                .draw()
                .map_err(plot_err(path))?;
            chart
                .draw_series(LineSeries::new(vec![(0.0, 0.0), (1.0, 1.0)], RGBColor(150, 150, 150).stroke_width(1)))
                .map_err(plot_err(path))?;
            for (k, c) in curves.iter().enumerate() {
                let colour = SERIES_COLOURS[k % SERIES_COLOURS.len()];
                chart
                    .draw_series(LineSeries::new(c.points.iter().map(|p| (p.fpr, p.tpr)), colour.stroke_width(3)))
                    .map_err(plot_err(path))?
                    .label(c.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(3)));
            }
            if !curves.is_empty() {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .label_font((FONT, 14))
                    .position(SeriesLabelPosition::LowerRight)
                    .draw()
                    .map_err(plot_err(path))?;
            }
        }
        Ok(())
    })
}

/// A grid of images with column titles and row labels; `None` cells show "—". Images are scaled to `cell`
/// pixels square (nearest neighbour, so small images stay crisp).
pub fn image_grid_png(path: &Path, title: &str, columns: &[String], rows: &[(String, Vec<Option<Image>>)], cell: u32) -> Result<()> {
    let (label_w, head_h, gap) = (150u32, 76u32, 8u32);
    let width = label_w + columns.len() as u32 * (cell + gap) + gap;
    let height = head_h + rows.len() as u32 * (cell + gap) + gap;
    with_canvas(path, width, height, |root| {
        let text = |s: &str, size: u32, x: i32, y: i32| -> Result<()> {
            root.draw(&Text::new(s.to_string(), (x, y), (FONT, size).into_font().color(&BLACK))).map_err(plot_err(path))
        };
        text(title, 20, 10, 10)?;
        for (c, name) in columns.iter().enumerate() {
            text(name, 17, (label_w + gap + c as u32 * (cell + gap)) as i32, 48)?;
        }
        for (r, (label, cells)) in rows.iter().enumerate() {
            let y0 = head_h + r as u32 * (cell + gap);
            let lines: Vec<&str> = label.lines().collect();
            let top = (y0 + cell / 2) as i32 - 10 * lines.len() as i32;
            for (k, line) in lines.iter().enumerate() {
                text(line, 16, 8, top + 20 * k as i32)?;
            }
            for (c, img) in cells.iter().enumerate() {
                let x0 = label_w + gap + c as u32 * (cell + gap);
                match img {
                    Some(img) => {
                        let rgb = img.to_rgb();
                        for y in 0..cell {
                            let sy = (y as usize * rgb.height / cell as usize).min(rgb.height - 1);
                            for x in 0..cell {
                                let sx = (x as usize * rgb.width / cell as usize).min(rgb.width - 1);
                                let p = &rgb.data[(sy * rgb.width + sx) * 3..][..3];
                                let px = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                                root.draw_pixel(((x0 + x) as i32, (y0 + y) as i32), &RGBColor(px(p[0]), px(p[1]), px(p[2])))
                                    .map_err(plot_err(path))?;
                            }
                        }
                    }
                    None => {
                        let (x, y) = (x0 as i32, y0 as i32);
                        root.draw(&Rectangle::new([(x, y), (x + cell as i32, y + cell as i32)], RGBColor(225, 225, 225).filled()))
                            .map_err(plot_err(path))?;
                        text("—", 28, x + cell as i32 / 2 - 10, y + cell as i32 / 2 - 16)?;
                    }
                }
            }
        }
        Ok(())
    })
}
