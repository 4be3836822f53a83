// plot_loss: the loss curves of a run as SVG pictures in its folder, as LLaMA-Factory writes
// training_loss.png: training_loss.svg from metrics.jsonl's "loss" and, when the run evaluated,
// training_eval_loss.svg from "eval_loss" (plus one dashed line per dataset, eval_<name>_loss).
// Each shows the raw curve faintly and LLaMA-Factory's smoothed curve on top.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace ming::train {

// LLaMA-Factory's smoothing (its ploting.smooth): an exponential moving average started at the
// first value, with weight 1.8 * (sigmoid(0.05 * n) - 0.5) for n points: light for short
// runs, close to 0.9 for long ones.
std::vector<double> smooth_curve(const std::vector<double>& values);

struct PlotSeries {
  std::string label;
  std::vector<std::pair<double, double>> points;  // (x, y), x ascending
  std::string color = "#1f77b4";
  double opacity = 1.0;
  bool dashed = false;
};

struct LinePlot {
  std::string title, x_label, y_label;
  std::vector<PlotSeries> series;
};

// A standalone SVG document: axes with round-number ticks spanning the data, grid lines, the
// series as polylines (a dot where a series has a single point) and a legend.
std::string line_plot_svg(const LinePlot& plot);

// Reads <dir>/metrics.jsonl and writes training_loss.svg (and training_eval_loss.svg when there
// are eval losses) atomically into `dir`. Returns the files written; none when there is no loss.
std::vector<std::filesystem::path> write_loss_plots(const std::filesystem::path& dir);

}  // namespace ming::train
