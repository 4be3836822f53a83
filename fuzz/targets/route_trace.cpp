// A route trace file (route/trace.h), read to the end record, then its statistics.
#include "../fuzz.h"
#include "ming/route/stats.h"
#include "ming/route/trace.h"

MING_FUZZ_TARGET(route_trace) {
  const auto path = ming::fuzz::write_file("routes.trace", ming::fuzz::as_text(data, size));
  ming::fuzz::expect_clean([&] {
    ming::route::RouteTraceReader reader(path);
    ming::route::TraceExample example;
    while (reader.next(example)) {
    }
  });
  ming::fuzz::expect_clean([&] { ming::route::compute_stats(path); });
}
