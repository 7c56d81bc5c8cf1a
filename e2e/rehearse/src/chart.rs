//! PNG charts of time series (the HPA replay): panels stacked over one time axis, drawn
//! with `plotters`' bitmap backend. Text needs a TrueType font; the first of the usual
//! system fonts found is used (Debian: `fonts-dejavu-core`).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

/// One line of a panel.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One panel: a y axis and its lines.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Registers a system font as "sans-serif" once; the path it used.
fn font() -> Result<&'static str> {
    static FONT: OnceLock<Option<&'static str>> = OnceLock::new();
    let found = FONT.get_or_init(|| {
        let path = std::env::var("CHART_FONT")
            .ok()
            .map(|p| &*Box::leak(p.into_boxed_str()))
            .into_iter()
            .chain(FONTS.iter().copied())
            .find(|p| Path::new(p).exists())?;
        let bytes: &'static [u8] = Box::leak(std::fs::read(path).ok()?.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).ok()?;
        Some(path)
    });
    found.ok_or_else(|| {
        anyhow!(
            "no TrueType font found for the chart's text (install fonts-dejavu-core, or set CHART_FONT to a .ttf file)"
        )
    })
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws `panels` one under the other over a shared x axis (seconds) into a PNG.
pub fn write_png(path: &Path, title: &str, x_label: &str, panels: &[Panel]) -> Result<()> {
    font()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let height = 60 + 260 * u32::try_from(panels.len()).unwrap_or(1);
    let root = BitMapBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let root = root.titled(title, ("sans-serif", 24)).map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    let x_max =
        panels.iter().flat_map(|p| p.series.iter()).flat_map(|s| s.points.iter()).map(|p| p.0).fold(1.0, f64::max);
    for (panel, area) in panels.iter().zip(areas.iter()) {
        let y_max = panel.series.iter().flat_map(|s| s.points.iter()).map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(|e| anyhow!("{e}"))?;
        chart.configure_mesh().x_desc(x_label).y_desc(&panel.y_label).draw().map_err(|e| anyhow!("{e}"))?;
        for (i, s) in panel.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
                .map_err(|e| anyhow!("{e}"))?
                .label(&s.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_written_and_is_a_png() {
        if font().is_err() {
            eprintln!("SKIP: no TrueType font on this machine (fonts-dejavu-core)");
            return;
        }
        let path = std::env::temp_dir().join(format!("cloudmart-chart-{}.png", std::process::id()));
        let line = |name: &str, k: f64| Series {
            name: name.into(),
            points: (0..20).map(|i| (f64::from(i) * 15.0, k * f64::from(i))).collect(),
        };
        let panels = vec![
            Panel { title: "replicas".into(), y_label: "pods".into(), series: vec![line("replicas", 0.2)] },
            Panel {
                title: "CPU".into(),
                y_label: "% of request".into(),
                series: vec![line("cpu", 5.0), line("target", 0.0)],
            },
        ];
        write_png(&path, "test", "seconds", &panels).expect("written");
        let bytes = std::fs::read(&path).expect("readable");
        std::fs::remove_file(&path).ok();
        assert!(bytes.len() > 1000, "a real image, {} bytes", bytes.len());
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    }
}
