// A dataset file (JSON lines or one JSON array) read as each format in turn: auto, sharegpt,
// messages, alpaca, promptcblue, text.
#include "../fuzz.h"
#include "ming/data/reader.h"

MING_FUZZ_TARGET(dataset_jsonl) {
  const auto path = ming::fuzz::write_file("data.jsonl", ming::fuzz::as_text(data, size));
  using ming::data::DataFormat;
  for (DataFormat format : {DataFormat::auto_detect, DataFormat::sharegpt, DataFormat::messages,
                            DataFormat::alpaca, DataFormat::promptcblue, DataFormat::text})
    ming::fuzz::expect_clean(
        [&] { ming::data::read_examples(path, format, ming::data::BadExamplePolicy::skip); });
  ming::fuzz::expect_clean([&] {
    ming::data::read_examples(path, DataFormat::auto_detect, ming::data::BadExamplePolicy::stop);
  });
}
