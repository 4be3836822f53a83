// An evaluation task spec (share/tasks/*.yaml), then its prompt template and answer parser.
#include "../fuzz.h"
#include "ming/eval/task.h"

MING_FUZZ_TARGET(task_yaml) {
  const auto path = ming::fuzz::write_file("task.yaml", ming::fuzz::as_text(data, size));
  ming::fuzz::expect_clean([&] {
    const auto spec = ming::eval::load_task_spec(path.string());
    const nlohmann::json record = {{"question", "q?"}, {"options", {{"A", "x"}, {"B", "y"}}},
                                   {"answer", "A"},    {"input", "i"},
                                   {"target", "t"},    {"choices", {"x", "y"}}};
    ming::fuzz::expect_clean([&] { ming::eval::render_prompt(spec, record); });
    ming::eval::parse_answer(spec, "The answer is A. B", record);
  });
}
