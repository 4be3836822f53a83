// plot_loss: LLaMA-Factory's smoothing and the SVG pictures written from metrics.jsonl.
#include "ming/train/loss_plot.h"

#include "ming/io/json.h"

#include <cmath>

#include <doctest/doctest.h>

#include "support.h"

namespace {

using namespace ming;
using ming::test::TempDir;

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("loss plot: smoothing is LLaMA-Factory's EMA with a length-dependent weight") {
  const std::vector<double> values = {1.0, 0.0, 1.0};
  const double w = 1.8 * (1.0 / (1.0 + std::exp(-0.05 * 3)) - 0.5);
  auto s = train::smooth_curve(values);
  REQUIRE(s.size() == 3);
  CHECK(s[0] == doctest::Approx(1.0));
  CHECK(s[1] == doctest::Approx(w));
  CHECK(s[2] == doctest::Approx(w * w + (1 - w)));
  // Long runs smooth hard: the weight tends to 0.9.
  CHECK(train::smooth_curve(std::vector<double>(500, 2.0)).back() == doctest::Approx(2.0));
  CHECK(train::smooth_curve({}).empty());
}

TEST_CASE("loss plot: metrics.jsonl becomes training_loss.svg and training_eval_loss.svg") {
  TempDir dir("ming-plot");
  std::string lines;
  for (int step = 1; step <= 30; ++step) {
    lines += io::Json{{"step", step}, {"loss", 3.0 / step}, {"learning_rate", 1e-4}}.dump() + "\n";
    if (step % 10 == 0)
      lines += io::Json{{"step", step},
                        {"eval_loss", 2.0 / step},
                        {"eval_qa_loss", 2.2 / step},
                        {"eval_chat_loss", 1.8 / step}}
                   .dump() +
               "\n";
  }
  test::write_text(dir / "metrics.jsonl", lines);
  auto written = train::write_loss_plots(dir.path());
  REQUIRE(written.size() == 2);
  const std::string loss = test::read_text(dir / "training_loss.svg");
  CHECK(loss.rfind("<svg", 0) == 0);
  CHECK(count(loss, "<polyline") == 2);  // original and smoothed
  CHECK(loss.find(">original<") != std::string::npos);
  CHECK(loss.find(">smoothed<") != std::string::npos);
  CHECK(loss.find(">step<") != std::string::npos);
  // Each curve has one vertex per logged step.
  const size_t first = loss.find("points=\"");
  const size_t end = loss.find('"', first + 8);
  CHECK(count(loss.substr(first, end - first), ",") == 30);
  const std::string eval = test::read_text(dir / "training_eval_loss.svg");
  CHECK(count(eval, "<polyline") == 4);  // original, smoothed, one per dataset
  CHECK(eval.find(">qa<") != std::string::npos);

  TempDir empty("ming-plot");
  CHECK(train::write_loss_plots(empty.path()).empty());
}
