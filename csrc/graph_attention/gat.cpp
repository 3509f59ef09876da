// Device-independent argument checks of the GAT ops (used by the CPU and CUDA kernels alike).
#include "graph_attention/gat.h"

#include "common/checks.h"

namespace pyunlearn::gat {

at::ScalarType stat_dtype(at::ScalarType h) { return h == at::kDouble ? at::kDouble : at::kFloat; }

namespace {

void check_shape(const char* name, const at::Tensor& t, at::IntArrayRef expected) {
  TORCH_CHECK_VALUE(t.sizes() == expected, name, " must have shape ", expected, ", got ", t.sizes());
}

// `ref` is the op's first feature tensor (h, or xl for GATv2); every other tensor must live on its device.
void check_on(const char* name, const at::Tensor& t, const at::Tensor& ref, const char* ref_name = "h") {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " must be on ", ref_name, "'s device ", ref.device(), ", got ",
                    t.device());
}

void check_shape_dtype(const char* name, const at::Tensor& t, at::IntArrayRef expected, const at::Tensor& ref,
                       const char* ref_name) {
  check_on(name, t, ref, ref_name);
  check_shape(name, t, expected);
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), name, " must have ", ref_name, "'s dtype ",
                   ref.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.is_contiguous(), name, " must be contiguous");
}

void check_index(const char* name, const at::Tensor& t, at::ScalarType dtype, const at::Tensor& h,
                 const char* ref_name) {
  check_on(name, t, h, ref_name);
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, " must have the index dtype of rowptr (", dtype, "), got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 1 && t.is_contiguous(), name, " must be a contiguous 1-D tensor, got shape ",
                    t.sizes());
}

void check_graph(const at::Tensor& h, const char* ref_name, int64_t n_src, int64_t n_dst, const at::Tensor& rowptr,
                 const at::Tensor& col, const at::Tensor& colptr, const at::Tensor& row_csc,
                 const at::Tensor& csc_to_csr) {
  const auto idx = rowptr.scalar_type();
  TORCH_CHECK_TYPE(idx == at::kInt || idx == at::kLong, "rowptr must be int32 or int64, got ", idx);
  check_index("rowptr", rowptr, idx, h, ref_name);
  TORCH_CHECK_VALUE(rowptr.numel() == n_dst + 1, "rowptr must have N_dst + 1 = ", n_dst + 1, " entries, got ",
                    rowptr.numel());
  check_index("col", col, idx, h, ref_name);
  const int64_t n_edges = col.numel();
  check_index("colptr", colptr, idx, h, ref_name);
  TORCH_CHECK_VALUE(colptr.numel() == n_src + 1, "colptr must have N_src + 1 = ", n_src + 1, " entries, got ",
                    colptr.numel());
  check_index("row_csc", row_csc, idx, h, ref_name);
  check_index("csc_to_csr", csc_to_csr, idx, h, ref_name);
  TORCH_CHECK_VALUE(row_csc.numel() == n_edges && csc_to_csr.numel() == n_edges,
                    "row_csc and csc_to_csr must have E = ", n_edges, " entries (col's), got ", row_csc.numel(),
                    " and ", csc_to_csr.numel());
}

}  // namespace

void check_dropout(double dropout) {
  TORCH_CHECK_VALUE(dropout >= 0.0 && dropout < 1.0, "dropout must be in [0, 1), got ", dropout);
}

void check_gat_fwd_args(const at::Tensor& h, const at::Tensor& s_src, const at::Tensor& s_dst,
                        const std::optional<at::Tensor>& e_score, const at::Tensor& rowptr, const at::Tensor& col,
                        const at::Tensor& colptr, const at::Tensor& row_csc, const at::Tensor& csc_to_csr) {
  TORCH_CHECK_TYPE(at::isFloatingType(h.scalar_type()), "h must be a floating-point tensor, got ", h.scalar_type());
  TORCH_CHECK_VALUE(h.dim() == 3 && h.is_contiguous(), "h must be a contiguous [N_src, H, C] tensor, got shape ",
                    h.sizes());
  const int64_t n_src = h.size(0), heads = h.size(1);
  TORCH_CHECK_VALUE(s_dst.dim() == 2, "s_dst must be [N_dst, H], got shape ", s_dst.sizes());
  const int64_t n_dst = s_dst.size(0);
  for (const auto& [name, t, n] : {std::tuple<const char*, const at::Tensor&, int64_t>{"s_src", s_src, n_src},
                                   std::tuple<const char*, const at::Tensor&, int64_t>{"s_dst", s_dst, n_dst}}) {
    check_on(name, t, h);
    check_shape(name, t, {n, heads});
    TORCH_CHECK_TYPE(t.scalar_type() == h.scalar_type(), name, " must have h's dtype ", h.scalar_type(), ", got ",
                     t.scalar_type());
    TORCH_CHECK_VALUE(t.is_contiguous(), name, " must be contiguous");
  }
  check_graph(h, "h", n_src, n_dst, rowptr, col, colptr, row_csc, csc_to_csr);
  const int64_t n_edges = col.numel();
  if (e_score.has_value() && e_score->defined()) {
    check_on("e_score", *e_score, h);
    check_shape("e_score", *e_score, {n_edges, heads});
    TORCH_CHECK_TYPE(e_score->scalar_type() == h.scalar_type(), "e_score must have h's dtype ", h.scalar_type(),
                     ", got ", e_score->scalar_type());
    TORCH_CHECK_VALUE(e_score->is_contiguous(), "e_score must be contiguous");
  }
}

void check_gat_bwd_args(const at::Tensor& grad_out, const at::Tensor& h, const at::Tensor& s_src,
                        const at::Tensor& s_dst, const std::optional<at::Tensor>& e_score, const at::Tensor& rowptr,
                        const at::Tensor& col, const at::Tensor& colptr, const at::Tensor& row_csc,
                        const at::Tensor& csc_to_csr, const at::Tensor& out, const at::Tensor& row_max,
                        const at::Tensor& row_denom) {
  check_gat_fwd_args(h, s_src, s_dst, e_score, rowptr, col, colptr, row_csc, csc_to_csr);
  const int64_t n_dst = s_dst.size(0), heads = h.size(1), ch = h.size(2);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"grad_out", grad_out},
                                std::pair<const char*, const at::Tensor&>{"out", out}}) {
    check_on(name, t, h);
    check_shape(name, t, {n_dst, heads, ch});
    TORCH_CHECK_TYPE(t.scalar_type() == h.scalar_type(), name, " must have h's dtype ", h.scalar_type(), ", got ",
                     t.scalar_type());
    TORCH_CHECK_VALUE(t.is_contiguous(), name, " must be contiguous");
  }
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"row_max", row_max},
                                std::pair<const char*, const at::Tensor&>{"row_denom", row_denom}}) {
    check_on(name, t, h);
    check_shape(name, t, {n_dst, heads});
    TORCH_CHECK_TYPE(t.scalar_type() == stat_dtype(h.scalar_type()), name, " must have dtype ",
                     stat_dtype(h.scalar_type()), ", got ", t.scalar_type());
  }
}

void check_gatv2_fwd_args(const at::Tensor& xl, const at::Tensor& xr, const at::Tensor& att,
                          const std::optional<at::Tensor>& e_feat, const at::Tensor& rowptr, const at::Tensor& col,
                          const at::Tensor& colptr, const at::Tensor& row_csc, const at::Tensor& csc_to_csr) {
  TORCH_CHECK_TYPE(at::isFloatingType(xl.scalar_type()), "xl must be a floating-point tensor, got ",
                   xl.scalar_type());
  TORCH_CHECK_VALUE(xl.dim() == 3 && xl.is_contiguous(), "xl must be a contiguous [N_src, H, C] tensor, got shape ",
                    xl.sizes());
  const int64_t n_src = xl.size(0), heads = xl.size(1), ch = xl.size(2);
  TORCH_CHECK_VALUE(xr.dim() == 3, "xr must be [N_dst, H, C], got shape ", xr.sizes());
  const int64_t n_dst = xr.size(0);
  check_shape_dtype("xr", xr, {n_dst, heads, ch}, xl, "xl");
  check_shape_dtype("att", att, {heads, ch}, xl, "xl");
  check_graph(xl, "xl", n_src, n_dst, rowptr, col, colptr, row_csc, csc_to_csr);
  if (e_feat.has_value() && e_feat->defined()) {
    check_shape_dtype("e_feat", *e_feat, {col.numel(), heads, ch}, xl, "xl");
  }
}

void check_gatv2_bwd_args(const at::Tensor& grad_out, const at::Tensor& xl, const at::Tensor& xr,
                          const at::Tensor& att, const std::optional<at::Tensor>& e_feat, const at::Tensor& rowptr,
                          const at::Tensor& col, const at::Tensor& colptr, const at::Tensor& row_csc,
                          const at::Tensor& csc_to_csr, const at::Tensor& out, const at::Tensor& row_max,
                          const at::Tensor& row_denom) {
  check_gatv2_fwd_args(xl, xr, att, e_feat, rowptr, col, colptr, row_csc, csc_to_csr);
  check_shape_dtype("grad_out", grad_out, xr.sizes(), xl, "xl");
  check_shape_dtype("out", out, xr.sizes(), xl, "xl");
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"row_max", row_max},
                                std::pair<const char*, const at::Tensor&>{"row_denom", row_denom}}) {
    check_on(name, t, xl, "xl");
    check_shape(name, t, {xr.size(0), xl.size(1)});
    TORCH_CHECK_TYPE(t.scalar_type() == stat_dtype(xl.scalar_type()), name, " must have dtype ",
                     stat_dtype(xl.scalar_type()), ", got ", t.scalar_type());
  }
}

}  // namespace pyunlearn::gat
