// Declarations only: the cost-model and search structs and functions as galvatron._C members.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>

#include "search/cost_model.h"
#include "search/mesh.h"
#include "search/search.h"

namespace py = pybind11;
using namespace galvatron;

namespace {

void bind_enums(py::module_& m) {
  py::enum_<DpType>(m, "DpType")
      .value("DDP", DpType::kDdp).value("ZERO1", DpType::kZero1)
      .value("ZERO2", DpType::kZero2).value("ZERO3", DpType::kZero3);
  py::enum_<SpKind>(m, "SpKind")
      .value("NONE", SpKind::kNone).value("MEGATRON", SpKind::kMegatron).value("ULYSSES", SpKind::kUlysses);
  py::enum_<Schedule>(m, "Schedule")
      .value("GPIPE", Schedule::kGpipe).value("ONE_F_ONE_B", Schedule::k1F1B)
      .value("INTERLEAVED_1F1B", Schedule::kInterleaved1F1B);
  py::enum_<Checkpoint>(m, "Checkpoint")
      .value("NONE", Checkpoint::kNone).value("SELECTIVE", Checkpoint::kSelective).value("FULL", Checkpoint::kFull);
  py::enum_<Op>(m, "Op")
      .value("ALL_REDUCE", Op::kAllReduce).value("ALL_GATHER", Op::kAllGather)
      .value("REDUCE_SCATTER", Op::kReduceScatter).value("ALL_TO_ALL", Op::kAllToAll).value("P2P", Op::kP2P);
  py::enum_<Placement>(m, "Placement")
      .value("CONSECUTIVE", Placement::kConsecutive).value("STRIDED", Placement::kStrided)
      .value("INTER_NODE", Placement::kInterNode);
}

void bind_inputs(py::module_& m) {
  py::class_<Strategy>(m, "Strategy")
      .def(py::init<>())
      .def_readwrite("tp", &Strategy::tp).def_readwrite("sp", &Strategy::sp)
      .def_readwrite("sp_kind", &Strategy::sp_kind).def_readwrite("dp_type", &Strategy::dp_type)
      .def_readwrite("checkpoint", &Strategy::checkpoint).def_readwrite("tp_consecutive", &Strategy::tp_consecutive);
  py::class_<CollectiveEntry>(m, "CollectiveEntry")
      .def(py::init<>())
      .def_readwrite("op", &CollectiveEntry::op).def_readwrite("group_size", &CollectiveEntry::group_size)
      .def_readwrite("placement", &CollectiveEntry::placement).def_readwrite("alpha_ms", &CollectiveEntry::alpha_ms)
      .def_readwrite("bandwidth_gbps", &CollectiveEntry::bandwidth_gbps);
  py::class_<HardwareTables>(m, "HardwareTables")
      .def(py::init<>())
      .def_readwrite("num_nodes", &HardwareTables::num_nodes).def_readwrite("gpus_per_node", &HardwareTables::gpus_per_node)
      .def_readwrite("collectives", &HardwareTables::collectives)
      .def_readwrite("overlap_slowdown", &HardwareTables::overlap_slowdown)
      .def_readwrite("optimizer_ms_per_param", &HardwareTables::optimizer_ms_per_param)
      .def_readwrite("framework_overhead_bytes", &HardwareTables::framework_overhead_bytes)
      .def_readwrite("comm_buffer_bytes", &HardwareTables::comm_buffer_bytes)
      .def_readwrite("inter_node_rings", &HardwareTables::inter_node_rings);
  py::class_<LayerTypeProfile>(m, "LayerTypeProfile")
      .def(py::init<>())
      .def_readwrite("name", &LayerTypeProfile::name).def_readwrite("param_count", &LayerTypeProfile::param_count)
      .def_readwrite("carry_bytes_per_sample", &LayerTypeProfile::carry_bytes_per_sample)
      .def_readwrite("num_heads", &LayerTypeProfile::num_heads).def_readwrite("num_kv_heads", &LayerTypeProfile::num_kv_heads)
      .def_readwrite("tp_collectives", &LayerTypeProfile::tp_collectives)
      .def_readwrite("ulysses_bytes_per_sample", &LayerTypeProfile::ulysses_bytes_per_sample)
      .def_readwrite("seq_len", &LayerTypeProfile::seq_len)
      .def_readwrite("allow_sequence_parallel", &LayerTypeProfile::allow_sequence_parallel)
      .def_readwrite("degrees", &LayerTypeProfile::degrees)
      .def_readwrite("fwd_ms_per_sample", &LayerTypeProfile::fwd_ms_per_sample)
      .def_readwrite("bwd_ms_per_sample", &LayerTypeProfile::bwd_ms_per_sample)
      .def_readwrite("fwd_ms_fixed", &LayerTypeProfile::fwd_ms_fixed).def_readwrite("bwd_ms_fixed", &LayerTypeProfile::bwd_ms_fixed)
      .def_property(
          "act_bytes_per_sample",
          [](const LayerTypeProfile& p) {
            return std::array<std::vector<int64_t>, 3>{p.act_bytes_per_sample[0], p.act_bytes_per_sample[1], p.act_bytes_per_sample[2]};
          },
          [](LayerTypeProfile& p, const std::array<std::vector<int64_t>, 3>& v) {
            for (int k = 0; k < 3; ++k) p.act_bytes_per_sample[k] = v[k];
          },
          "per sp kind (none, megatron, ulysses): bytes per sample, one entry per shard degree (-1: none)")
      .def_property(
          "selective_act_bytes_per_sample",
          [](const LayerTypeProfile& p) {
            return std::array<std::vector<int64_t>, 3>{p.selective_act_bytes_per_sample[0],
                                                       p.selective_act_bytes_per_sample[1],
                                                       p.selective_act_bytes_per_sample[2]};
          },
          [](LayerTypeProfile& p, const std::array<std::vector<int64_t>, 3>& v) {
            for (int k = 0; k < 3; ++k) p.selective_act_bytes_per_sample[k] = v[k];
          },
          "selective checkpointing: per sp kind, bytes kept per sample, one entry per shard degree (-1: none; empty: not available)")
      .def_property(
          "fsdp_act_bytes_per_sample",
          [](const LayerTypeProfile& p) {
            return std::array<std::vector<int64_t>, 3>{p.fsdp_act_bytes_per_sample[0], p.fsdp_act_bytes_per_sample[1],
                                                       p.fsdp_act_bytes_per_sample[2]};
          },
          [](LayerTypeProfile& p, const std::array<std::vector<int64_t>, 3>& v) {
            for (int k = 0; k < 3; ++k) p.fsdp_act_bytes_per_sample[k] = v[k];
          },
          "mixed precision, ZeRO-2/3 units: like act_bytes_per_sample (empty: the same)")
      .def_property(
          "fsdp_selective_act_bytes_per_sample",
          [](const LayerTypeProfile& p) {
            return std::array<std::vector<int64_t>, 3>{p.fsdp_selective_act_bytes_per_sample[0],
                                                       p.fsdp_selective_act_bytes_per_sample[1],
                                                       p.fsdp_selective_act_bytes_per_sample[2]};
          },
          [](LayerTypeProfile& p, const std::array<std::vector<int64_t>, 3>& v) {
            for (int k = 0; k < 3; ++k) p.fsdp_selective_act_bytes_per_sample[k] = v[k];
          },
          "mixed precision, ZeRO-2/3 units: like selective_act_bytes_per_sample (empty: the same)")
      .def_readwrite("fsdp_carry_bytes_per_sample", &LayerTypeProfile::fsdp_carry_bytes_per_sample,
                     "mixed precision, ZeRO-2/3 units: the checkpointed input's bytes per sample (0: carry)")
      .def_readwrite("selective_recompute_ms_per_sample", &LayerTypeProfile::selective_recompute_ms_per_sample,
                     "selective checkpointing: recomputed ms per sample, one entry per shard degree (-1: none)");
  py::class_<EmbeddingProfile>(m, "EmbeddingProfile")
      .def(py::init<>())
      .def_readwrite("embed_param_count", &EmbeddingProfile::embed_param_count)
      .def_readwrite("head_param_count", &EmbeddingProfile::head_param_count)
      .def_readwrite("tied_param_count", &EmbeddingProfile::tied_param_count)
      .def_readwrite("degrees", &EmbeddingProfile::degrees)
      .def_readwrite("embed_fwd_ms_per_sample", &EmbeddingProfile::embed_fwd_ms_per_sample)
      .def_readwrite("embed_bwd_ms_per_sample", &EmbeddingProfile::embed_bwd_ms_per_sample)
      .def_readwrite("head_fwd_ms_per_sample", &EmbeddingProfile::head_fwd_ms_per_sample)
      .def_readwrite("head_bwd_ms_per_sample", &EmbeddingProfile::head_bwd_ms_per_sample)
      .def_readwrite("embed_act_bytes_per_sample", &EmbeddingProfile::embed_act_bytes_per_sample)
      .def_readwrite("head_act_bytes_per_sample", &EmbeddingProfile::head_act_bytes_per_sample)
      .def_readwrite("head_transient_bytes_per_sample", &EmbeddingProfile::head_transient_bytes_per_sample)
      .def_readwrite("carry_bytes_per_sample", &EmbeddingProfile::carry_bytes_per_sample)
      .def_readwrite("seq_len", &EmbeddingProfile::seq_len);
  py::class_<ModelTables>(m, "ModelTables")
      .def(py::init<>())
      .def_readwrite("layer_types", &ModelTables::layer_types).def_readwrite("layer_type_of", &ModelTables::layer_type_of)
      .def_readwrite("embedding", &ModelTables::embedding).def_readwrite("compute_bytes", &ModelTables::compute_bytes)
      .def_readwrite("mixed_precision", &ModelTables::mixed_precision);
  py::class_<PlanSpec>(m, "PlanSpec")
      .def(py::init<>())
      .def_readwrite("world_size", &PlanSpec::world_size).def_readwrite("pp", &PlanSpec::pp)
      .def_readwrite("schedule", &PlanSpec::schedule).def_readwrite("virtual_stages", &PlanSpec::virtual_stages)
      .def_readwrite("num_microbatches", &PlanSpec::num_microbatches)
      .def_readwrite("global_batch_size", &PlanSpec::global_batch_size)
      .def_readwrite("stage_layers", &PlanSpec::stage_layers).def_readwrite("layers", &PlanSpec::layers)
      .def_readwrite("embedding", &PlanSpec::embedding);
  py::class_<SearchOptions>(m, "SearchOptions")
      .def(py::init<>())
      .def_readwrite("world_size", &SearchOptions::world_size)
      .def_readwrite("memory_budget_bytes", &SearchOptions::memory_budget_bytes)
      .def_readwrite("global_batch_sizes", &SearchOptions::global_batch_sizes)
      .def_readwrite("num_microbatches", &SearchOptions::num_microbatches)
      .def_readwrite("pp_degrees", &SearchOptions::pp_degrees).def_readwrite("schedules", &SearchOptions::schedules)
      .def_readwrite("virtual_stages", &SearchOptions::virtual_stages)
      .def_readwrite("max_tp", &SearchOptions::max_tp).def_readwrite("max_sp", &SearchOptions::max_sp)
      .def_readwrite("max_pp", &SearchOptions::max_pp).def_readwrite("dp_types", &SearchOptions::dp_types)
      .def_readwrite("allow_ulysses", &SearchOptions::allow_ulysses)
      .def_readwrite("allow_megatron_sp", &SearchOptions::allow_megatron_sp)
      .def_readwrite("allow_checkpoint", &SearchOptions::allow_checkpoint)
      .def_readwrite("allow_selective_checkpoint", &SearchOptions::allow_selective_checkpoint)
      .def_readwrite("allow_strided", &SearchOptions::allow_strided)
      .def_readwrite("megatron_sp_only", &SearchOptions::megatron_sp_only)
      .def_readwrite("search_pp_split", &SearchOptions::search_pp_split)
      .def_readwrite("uniform_only", &SearchOptions::uniform_only)
      .def_readwrite("num_threads", &SearchOptions::num_threads)
      .def_readwrite("max_tasks", &SearchOptions::max_tasks)
      .def_readwrite("max_frontier_entries", &SearchOptions::max_frontier_entries);
}

void bind_outputs(py::module_& m) {
  py::class_<MemoryBreakdown>(m, "MemoryBreakdown")
      .def_readonly("param_bytes", &MemoryBreakdown::param_bytes).def_readonly("grad_bytes", &MemoryBreakdown::grad_bytes)
      .def_readonly("optimizer_bytes", &MemoryBreakdown::optimizer_bytes)
      .def_readonly("activation_bytes", &MemoryBreakdown::activation_bytes)
      .def_readonly("transient_bytes", &MemoryBreakdown::transient_bytes)
      .def_readonly("buffer_bytes", &MemoryBreakdown::buffer_bytes)
      .def_readonly("overhead_bytes", &MemoryBreakdown::overhead_bytes)
      .def_property_readonly("total_bytes", &MemoryBreakdown::total);
  py::class_<TimeBreakdown>(m, "TimeBreakdown")
      .def_readonly("compute_ms", &TimeBreakdown::compute_ms).def_readonly("tp_comm_ms", &TimeBreakdown::tp_comm_ms)
      .def_readonly("sp_comm_ms", &TimeBreakdown::sp_comm_ms).def_readonly("dp_comm_ms", &TimeBreakdown::dp_comm_ms)
      .def_readonly("p2p_ms", &TimeBreakdown::p2p_ms).def_readonly("redistribution_ms", &TimeBreakdown::redistribution_ms)
      .def_readonly("optimizer_ms", &TimeBreakdown::optimizer_ms).def_readonly("bubble_ms", &TimeBreakdown::bubble_ms)
      .def_readonly("grad_sync_ms", &TimeBreakdown::grad_sync_ms)
      .def_readonly("fwd_ms", &TimeBreakdown::fwd_ms).def_readonly("recompute_ms", &TimeBreakdown::recompute_ms);
  py::class_<LayerTiming>(m, "LayerTiming")
      .def_readonly("fwd_ms", &LayerTiming::fwd_ms).def_readonly("bwd_ms", &LayerTiming::bwd_ms)
      .def_readonly("tp_comm_ms", &LayerTiming::tp_comm_ms).def_readonly("sp_comm_ms", &LayerTiming::sp_comm_ms)
      .def_readonly("dp_comm_ms", &LayerTiming::dp_comm_ms)
      .def_readonly("redistribution_ms", &LayerTiming::redistribution_ms)
      .def_readonly("per_step_ms", &LayerTiming::per_step_ms);
  py::class_<Prediction>(m, "Prediction")
      .def_readonly("step_time_ms", &Prediction::step_time_ms).def_readonly("stage_time_ms", &Prediction::stage_time_ms)
      .def_readonly("stage_memory", &Prediction::stage_memory).def_readonly("layer_timing", &Prediction::layer_timing)
      .def_readonly("embedding_timing", &Prediction::embedding_timing).def_readonly("breakdown", &Prediction::breakdown)
      .def_readonly("stage_breakdown", &Prediction::stage_breakdown)
      .def_readonly("critical_stage", &Prediction::critical_stage);
  py::class_<SearchStats>(m, "SearchStats")
      .def_readonly("tasks", &SearchStats::tasks).def_readonly("strategies", &SearchStats::strategies)
      .def_readonly("dp_sweeps", &SearchStats::dp_sweeps).def_readonly("frontier_entries", &SearchStats::frontier_entries)
      .def_readonly("plans_evaluated", &SearchStats::plans_evaluated);
  py::class_<SearchOutput>(m, "SearchOutput")
      .def_readonly("found", &SearchOutput::found).def_readonly("plan", &SearchOutput::plan)
      .def_readonly("prediction", &SearchOutput::prediction).def_readonly("samples_per_s", &SearchOutput::samples_per_s)
      .def_readonly("stats", &SearchOutput::stats).def_readonly("min_feasible_bytes", &SearchOutput::min_feasible_bytes)
      .def_readonly("min_memory_plan", &SearchOutput::min_memory_plan);
  py::class_<LayerCost>(m, "LayerCost")
      .def_readonly("fwd_ms", &LayerCost::fwd_ms).def_readonly("bwd_ms", &LayerCost::bwd_ms)
      .def_readonly("tp_comm_ms", &LayerCost::tp_comm_ms).def_readonly("sp_comm_ms", &LayerCost::sp_comm_ms)
      .def_readonly("dp_comm_ms", &LayerCost::dp_comm_ms).def_readonly("grad_sync_ms", &LayerCost::grad_sync_ms)
      .def_readonly("optimizer_ms", &LayerCost::optimizer_ms).def_readonly("param_bytes", &LayerCost::param_bytes)
      .def_readonly("grad_bytes", &LayerCost::grad_bytes).def_readonly("optimizer_bytes", &LayerCost::optimizer_bytes)
      .def_readonly("act_bytes", &LayerCost::act_bytes).def_readonly("spike_bytes", &LayerCost::spike_bytes);
}

}  // namespace

void register_search(py::module_& m) {
  m.def("dp_degree", &dp_degree, py::arg("world_size"), py::arg("pp"), py::arg("tp"), py::arg("sp"),
        "world_size / (pp*tp*sp); ValueError naming the field if it does not divide");
  bind_enums(m);
  bind_inputs(m);
  bind_outputs(m);
  m.def("validate_hardware", &validate_hardware, py::arg("hardware"));
  m.def("validate_model", &validate_model, py::arg("model"));
  m.def("evaluate_plan", &evaluate_plan, py::arg("model"), py::arg("hardware"), py::arg("plan"),
        py::call_guard<py::gil_scoped_release>(), "Predicted time and memory of a plan");
  m.def("search", &search, py::arg("model"), py::arg("hardware"), py::arg("options"),
        py::call_guard<py::gil_scoped_release>(), "Exact plan search");
  m.def("enumerate_strategies", &enumerate_strategies, py::arg("options"), py::arg("stage_size"),
        py::arg("embedding") = false);
  m.def("inflight_microbatches", &inflight_microbatches, py::arg("schedule"), py::arg("pp"), py::arg("v"),
        py::arg("m"), py::arg("chunk"));
  m.def(
      "layer_cost",
      [](const ModelTables& model, const HardwareTables& hw, int32_t layer_type, const Strategy& s,
         int32_t stage_first, int32_t stage_size, int32_t micro_batch) {
        validate_model(model);
        validate_hardware(hw);
        if (layer_type < 0 || layer_type >= static_cast<int32_t>(model.layer_types.size())) {
          throw std::invalid_argument("layer_type index out of range");
        }
        const CommModel comm(hw);
        return layer_cost(model, model.layer_types[layer_type], comm, s, stage_first, stage_size, micro_batch);
      },
      py::arg("model"), py::arg("hardware"), py::arg("layer_type"), py::arg("strategy"), py::arg("stage_first"),
      py::arg("stage_size"), py::arg("micro_batch"));
  m.def(
      "redistribution_fraction",
      [](const Strategy& a, const Strategy& b, int32_t stage_size, int32_t micro_batch, int64_t seq_len) {
        return redistribution_recv_fraction(layout_of(a, stage_size), layout_of(b, stage_size), stage_size,
                                            micro_batch, seq_len);
      },
      py::arg("src"), py::arg("dst"), py::arg("stage_size"), py::arg("micro_batch"), py::arg("seq_len"),
      "largest per-device exchange between two layer layouts, as a fraction of the micro-batch activation");
  // The activation-layout rules of the cost model, for the runtime's field-by-field test.
  py::class_<Layout>(m, "Layout")
      .def_readonly("n_batch", &Layout::n_batch).def_readonly("n_seq", &Layout::n_seq)
      .def_readonly("replicas", &Layout::replicas).def_readonly("consecutive", &Layout::consecutive)
      .def("__eq__", [](const Layout& a, const Layout& b) { return a == b; });
  m.def("layout_of", &layout_of, py::arg("strategy"), py::arg("stage_size"));
  m.def("embedding_layout", &embedding_layout, py::arg("strategy"), py::arg("stage_size"));
  m.def("boundary_layout", &boundary_layout, py::arg("stage_size"), py::arg("micro_batch"));
}
