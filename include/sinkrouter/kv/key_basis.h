// A per-KV-head orthonormal basis for the keys, and the score bounds kept in it.
//
// Any orthonormal P gives q . k = (P q) . (P k), so a per-dimension min/max box of the
// rotated keys P k bounds every score of a block just as the plain box does. Keys of
// trained models are far from isotropic: in their principal basis (the eigenvectors of
// the key covariance, strongest first) a block's box is thin in most directions and the
// bound is much tighter (DESIGN.md section 2, "the basis matters").
//
//   basis   [num_kv_heads, head_dim, head_dim] float, row r of head h is the r-th basis
//           vector, rows ordered by decreasing key variance
//
// Rounding: P is stored in float and is orthonormal only to ~1e-7. With E = I - P^T P,
// q . k = (P q) . (P k) + q^T E k, and |q^T E k| <= e ||q|| ||k||, e >= ||E||_2; and
// ||k|| <= ||P k|| / sqrt(1 - e). basis_error() computes such an e (the Frobenius norm of
// E, in float64), and rotated_box_bound() adds that slack, so the bound stays a bound.
#pragma once

#include <cstdint>
#include <vector>

#include "sinkrouter/kv/paged_kv.h"

namespace sinkrouter {

// Principal basis of the keys of sequence b of `kv`, per KV head: eigenvectors of the
// keys' covariance (float64 Jacobi), strongest first. Needs at least one token.
std::vector<float> fit_key_basis(const PagedKV& kv, int b);

// Same from keys given as float rows: keys [n, head_dim] of one head -> basis [D, D].
std::vector<float> fit_key_basis_rows(const float* keys, int64_t n, int head_dim);

// e >= ||I - P^T P||_2 over every head of `basis` [heads, D, D] (float64 Frobenius norm).
double basis_error(const float* basis, int heads, int head_dim);

// rot[r] = sum_d P[r][d] x[d] in float64. P [D, D] of one head.
void rotate(const float* P, const float* x, int D, double* rot);

// Upper bound of q . k over every k with lo <= P k <= hi (per dimension), given
// qrot = P q (float64), an upper bound q_norm of ||q|| and the basis error e of P.
// The float64 rounding of qrot and of the sum is covered by a slack of 1e-12 relative.
double rotated_box_bound(const double* qrot, double q_norm, const float* lo, const float* hi, int D, double e);

}  // namespace sinkrouter
