#include "common/cli.h"

#include <c10/util/Exception.h>

#include "ming/core/error.h"
#include "ming/core/log.h"
#include "ming/core/runtime.h"

namespace ming::cli {

void add_runtime_flags(CLI::App& app, RuntimeFlags& flags) {
  app.add_option("--threads", flags.threads, "CPU threads (0 = cores available to this process)")
      ->capture_default_str();
  app.add_option("--device", flags.device, "cpu | cuda | cuda:N")->capture_default_str();
  app.add_option("--dtype", flags.dtype, "compute dtype: bf16 | fp16 | fp32 | auto")
      ->capture_default_str();
  app.add_option("--seed", flags.seed, "random seed")->capture_default_str();
  app.add_flag("--quiet,-q", flags.quiet, "only errors on stderr");
}

Runtime apply_runtime_flags(const RuntimeFlags& flags) {
  if (flags.quiet) log::set_level(log::Level::warn);
  set_threads(flags.threads);
  set_seed(flags.seed);
  Runtime rt;
  rt.device = parse_device(flags.device);
  rt.dtype = parse_dtype(flags.dtype, rt.device);
  return rt;
}

int run(CLI::App& app, int argc, char** argv, const std::function<void()>& body) {
  const std::string tool = app.get_name().empty() ? "ming" : app.get_name();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: error: %s\n", tool.c_str(), e.what());
    std::fprintf(stderr, "Run with --help for usage.\n");
    return 2;
  }
  try {
    body();
    return 0;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: error: %s\n", tool.c_str(), e.what());
    return 2;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: error: %s\n", tool.c_str(), e.what());
    return 2;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "%s: error: %s\n", tool.c_str(), e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", tool.c_str(), e.what());
    return 1;
  }
}

}  // namespace ming::cli
