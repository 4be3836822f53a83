// TensorBoard event files (report_to: tensorboard), so a run can be watched with
// `tensorboard --logdir <output_dir>/runs` while it trains.
//
// File format: a sequence of TFRecords, each
//   uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | length bytes of data |
//   uint32 masked_crc32c(data)
// with masked_crc32c(x) = rotate_right(crc32c(x), 15) + 0xa282ead8. Each record's data is a
// tensorflow.Event protobuf: wall_time (1, double), step (2, int64), and one of file_version
// (3, string, "brain.Event:2" in the first record), summary (5: repeated Summary.Value value = 1,
// each tag (1, string) + simple_value (2, float)) or session_log (6: status (1) START = 1).
//
// The protobuf messages are encoded here rather than through libprotobuf: LibTorch builds
// link or bundle their own protobuf runtime, and a second one in the same process is the
// start-up clash this project already met with sentencepiece (text/sentencepiece_tokenizer.cpp);
// the five fields above are all TensorBoard needs. CRC32C comes from ISA-L (Debian libisal).
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include "ming/io/json.h"

namespace ming::train {

uint32_t crc32c(const void* data, size_t size);
uint32_t masked_crc32c(const void* data, size_t size);
// One TFRecord around `payload`.
std::string tfrecord(const std::string& payload);

class EventWriter {
 public:
  // Creates `dir` and a new events.out.tfevents.<unix seconds>.<host>.<pid> file in it, starting
  // with the file_version record. ming::Error when the file cannot be created.
  explicit EventWriter(const std::filesystem::path& dir);
  ~EventWriter();
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  void add_scalar(const std::string& tag, double value, int64_t step);
  // Every number of a metrics.jsonl line except "step", at that step: eval_<x> as eval/<x>,
  // anything else <x> as train/<x> (the Hugging Face Trainer's tags).
  void add_metrics(const io::Json& line);
  // A restart at `step` (resume): TensorBoard drops points at or after it written before.
  void session_start(int64_t step);
  const std::filesystem::path& path() const { return path_; }

 private:
  void write_event(int64_t step, const std::string& fields);

  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
};

}  // namespace ming::train
