//! Interventional Tree SHAP, exact, in f64.
//!
//! For one instance `x` and one background row `r`, the interventional game on a tree is
//! `v(S) = tree(x_S, r_rest)`. Walking the tree, a node where `x` and `r` go the same way
//! constrains nothing; a node where they part on a feature not seen before splits the walk in
//! two: the `x` side requires the feature in `S`, the `r` side requires it out of `S`. A leaf
//! reached with `a` features required in and `b` required out is the game
//! `value * [A ⊆ S, B ∩ S = ∅]`, whose Shapley values are closed-form:
//! `+value * (a-1)! b! / (a+b)!` for each feature of `A` and `-value * a! (b-1)! / (a+b)!` for
//! each feature of `B`. Summing over leaves, trees and background rows (then dividing by their
//! count) gives exactly the interventional Shapley values over the background set, which is
//! what `shap.TreeExplainer(model, data, feature_perturbation="interventional")` computes.
//!
//! The probability output follows shap's `model_output="probability"`: each background row's
//! margin attributions are rescaled by `(T(m(x)) - T(m(r))) / (m(x) - m(r))` for the
//! post-transform `T`, so they add up to that row's probability difference; the base value is
//! the mean of `T(m(r))`.
//!
//! Speed: the walk depends on a background row only through the branch each split sends it
//! down, so [`BackgroundSet`] groups the background rows per tree by that signature once, at
//! load (100 rows fall into ~17 groups per depth-3 tree). A request then walks each tree once
//! per group, weighted by the sum of the group's per-row scale factors (its size, for margins):
//! the same sums, in a different order.

/// How a node compares a feature value with its threshold (ONNX `nodes_modes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `BRANCH_LEQ`: true branch when `x <= threshold` (what skl2onnx emits).
    Leq,
    /// `BRANCH_LT`: `x < threshold`.
    Lt,
    /// `BRANCH_GTE`: `x >= threshold`.
    Gte,
    /// `BRANCH_GT`: `x > threshold`.
    Gt,
    /// `BRANCH_EQ`: `x == threshold`.
    Eq,
    /// `BRANCH_NEQ`: `x != threshold`.
    Neq,
    /// `LEAF`: no comparison; the node carries output values.
    Leaf,
}

impl Mode {
    /// The ONNX spelling, for reading `nodes_modes`.
    pub fn from_onnx(name: &str) -> Option<Mode> {
        Some(match name {
            "BRANCH_LEQ" => Mode::Leq,
            "BRANCH_LT" => Mode::Lt,
            "BRANCH_GTE" => Mode::Gte,
            "BRANCH_GT" => Mode::Gt,
            "BRANCH_EQ" => Mode::Eq,
            "BRANCH_NEQ" => Mode::Neq,
            "LEAF" => Mode::Leaf,
            _ => return None,
        })
    }
}

/// One node of a flattened ensemble. Children are indices into [`TreeEnsemble::nodes`]; for a
/// leaf, `yes` is the leaf's row in the leaf-value table.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// Kept as f64 so double thresholds (`nodes_values_as_tensor`) compare as ONNX Runtime
    /// compares them; a float32 threshold widened to f64 compares exactly as in float32.
    threshold: f64,
    feature: u32,
    yes: u32,
    no: u32,
    mode: Mode,
    /// `nodes_missing_value_tracks_true`: a NaN goes to the true branch.
    missing_yes: bool,
}

impl Node {
    /// Whether a row with `value` for this node's feature takes the true branch, exactly as
    /// ONNX Runtime decides it.
    #[inline]
    fn goes_yes(&self, value: f32) -> bool {
        let v = f64::from(value);
        if self.missing_yes && v.is_nan() {
            return true;
        }
        match self.mode {
            Mode::Leq => v <= self.threshold,
            Mode::Lt => v < self.threshold,
            Mode::Gte => v >= self.threshold,
            Mode::Gt => v > self.threshold,
            Mode::Eq => v == self.threshold,
            Mode::Neq => v != self.threshold,
            Mode::Leaf => false,
        }
    }

    #[inline]
    fn child(&self, yes: bool) -> u32 {
        if yes {
            self.yes
        } else {
            self.no
        }
    }
}

/// A tree ensemble in the neutral form the ONNX attributes describe: parallel arrays of nodes
/// identified by `(tree, node)` ids, and leaf weights per output. Tests build it directly.
#[derive(Debug, Clone, Default)]
pub struct FlatTrees {
    /// Per node: its tree (`nodes_treeids`).
    pub tree_ids: Vec<i64>,
    /// Per node: its id within the tree (`nodes_nodeids`).
    pub node_ids: Vec<i64>,
    /// Per node: the feature it splits on (`nodes_featureids`; ignored for leaves).
    pub features: Vec<i64>,
    /// Per node: the split threshold (`nodes_values`).
    pub thresholds: Vec<f64>,
    /// Per node: the comparison, or `Leaf` (`nodes_modes`).
    pub modes: Vec<Mode>,
    /// Per node: the child id taken when the comparison holds (`nodes_truenodeids`).
    pub true_ids: Vec<i64>,
    /// Per node: the child id taken otherwise (`nodes_falsenodeids`).
    pub false_ids: Vec<i64>,
    /// Empty means "never" for every node.
    pub missing_tracks_true: Vec<bool>,
    /// Leaf weights: `(tree id, node id, output, weight)`; several on one leaf and output add.
    pub weights: Vec<(i64, i64, usize, f64)>,
    /// Number of outputs (1 for a regressor or a binary classifier with one score).
    pub n_outputs: usize,
    /// Added to each output (ONNX `base_values`).
    pub base: Vec<f64>,
    /// Input width; every feature index must be below it.
    pub n_features: usize,
}

/// A validated, flattened tree ensemble: the model `/explain` runs Tree SHAP on.
#[derive(Debug, Clone)]
pub struct TreeEnsemble {
    nodes: Vec<Node>,
    roots: Vec<u32>,
    /// `n_leaves * n_outputs` values.
    leaf_values: Vec<f64>,
    n_outputs: usize,
    base: Vec<f64>,
    n_features: usize,
    /// Shapley weights by (features required in, features required out):
    /// `pos[a][b] = (a-1)! b! / (a+b)!` and `neg[a][b] = a! (b-1)! / (a+b)!`, flattened.
    pos_weights: Vec<f64>,
    neg_weights: Vec<f64>,
    /// Side of the weight tables: one more than the most distinct features on any path.
    weight_side: usize,
}

/// Reusable buffers for one Tree SHAP computation, so the inner loops never allocate.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Per feature: 0 free, 1 required in `S` (x side), 2 required out (r side).
    status: Vec<u8>,
    /// Features decided on the current path, with their side (true = x).
    path: Vec<(u32, bool)>,
    stack: Vec<Frame>,
    /// Per node: whether `x` takes the true branch.
    x_yes: Vec<bool>,
    /// Per background group: the sum of its rows' scale factors.
    group_weight: Vec<f64>,
}

/// A branch still to walk: the node, the path length when it was pushed, and the feature
/// decision taken on entering it.
#[derive(Debug, Clone, Copy)]
struct Frame {
    node: u32,
    depth: usize,
    decided: (u32, bool),
}

const FREE: u8 = 0;
const IN_S: u8 = 1;
const OUT_OF_S: u8 = 2;

/// Which output of the ensemble to explain, and how its margin maps to the explained quantity.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The raw output index.
    pub output: usize,
    /// Multiplies the raw output to give the class margin (−1 for the negative class of a
    /// binary classifier that scores only the positive one).
    pub sign: f64,
    /// Added after the sign (1 for the negative class `1 - p` of a binary classifier whose
    /// one score is a probability). Moves the base value, not the attributions.
    pub offset: f64,
    /// The link from margin to the explained value.
    pub link: Link,
}

/// The transform from margin to the explained output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Explain the margin itself (or an output the model already reports untransformed).
    Identity,
    /// Explain `1 / (1 + exp(-margin))`, rescaling per background row as shap does.
    Logistic,
}

impl Link {
    /// Applies the link to a margin.
    pub fn apply(self, margin: f64) -> f64 {
        match self {
            Link::Identity => margin,
            Link::Logistic => 1.0 / (1.0 + (-margin).exp()),
        }
    }
}

/// A Tree SHAP result: attributions, the base value and the ensemble's own value for `x`, all
/// in the explained output space.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeShap {
    /// One per feature, in input order.
    pub attributions: Vec<f64>,
    /// The mean explained output over the background rows.
    pub base_value: f64,
    /// `link(margin(x))` from the f64 trees: `base_value + sum(attributions)` up to rounding.
    pub model_value: f64,
}

/// A background set prepared for one ensemble: its rows, their raw outputs, and per tree the
/// rows grouped by the path signature that is all Tree SHAP depends on. Built once at load.
#[derive(Debug, Clone)]
pub struct BackgroundSet {
    rows: Vec<f32>,
    n_rows: usize,
    n_features: usize,
    /// Raw outputs of each row (`n_rows * n_outputs`, f64, base included).
    raw: Vec<f64>,
    /// Groups of tree `t` are `tree_groups[t]..tree_groups[t + 1]`.
    tree_groups: Vec<u32>,
    /// Per group: one of its rows (all walk the tree identically).
    representative: Vec<u32>,
    /// Per (row, tree), `b * n_trees + t`: the row's group.
    group_of: Vec<u32>,
}

impl BackgroundSet {
    /// Number of background rows.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Raw outputs of every row, `n_rows * n_outputs`.
    pub fn raw(&self) -> &[f64] {
        &self.raw
    }

    /// Total groups over all trees: the number of tree walks one explanation costs.
    pub fn n_groups(&self) -> usize {
        self.representative.len()
    }

    fn row(&self, b: usize) -> &[f32] {
        &self.rows[b * self.n_features..(b + 1) * self.n_features]
    }
}

impl TreeEnsemble {
    /// Validates and flattens: ids unique per tree, children in the same tree, every node
    /// reachable from exactly one root, no cycles, features in range, weights on leaves.
    pub fn from_flat(flat: &FlatTrees) -> Result<TreeEnsemble, String> {
        let n = flat.tree_ids.len();
        let same_len = [
            flat.node_ids.len(),
            flat.features.len(),
            flat.thresholds.len(),
            flat.modes.len(),
            flat.true_ids.len(),
            flat.false_ids.len(),
        ];
        if same_len.iter().any(|&l| l != n) {
            return Err(format!(
                "node attributes have different lengths ({n} tree ids vs {same_len:?})"
            ));
        }
        if !flat.missing_tracks_true.is_empty() && flat.missing_tracks_true.len() != n {
            return Err("nodes_missing_value_tracks_true has the wrong length".into());
        }
        if n == 0 {
            return Err("the ensemble has no nodes".into());
        }
        if flat.n_outputs == 0 || flat.base.len() != flat.n_outputs {
            return Err(format!(
                "{} base values for {} outputs",
                flat.base.len(),
                flat.n_outputs
            ));
        }
        let mut index = std::collections::HashMap::with_capacity(n);
        for i in 0..n {
            if index
                .insert((flat.tree_ids[i], flat.node_ids[i]), i)
                .is_some()
            {
                return Err(format!(
                    "tree {} has node {} twice",
                    flat.tree_ids[i], flat.node_ids[i]
                ));
            }
        }
        let mut leaf_of = vec![u32::MAX; n];
        let mut n_leaves = 0u32;
        let mut referenced = vec![false; n];
        let mut nodes = Vec::with_capacity(n);
        for (i, leaf) in leaf_of.iter_mut().enumerate() {
            let tree = flat.tree_ids[i];
            let mode = flat.modes[i];
            let missing_yes = flat.missing_tracks_true.get(i).copied().unwrap_or(false);
            if mode == Mode::Leaf {
                *leaf = n_leaves;
                nodes.push(Node {
                    threshold: 0.0,
                    feature: 0,
                    yes: n_leaves,
                    no: n_leaves,
                    mode,
                    missing_yes,
                });
                n_leaves += 1;
                continue;
            }
            let feature = flat.features[i];
            if feature < 0 || feature as usize >= flat.n_features {
                return Err(format!(
                    "tree {tree} node {} splits on feature {feature}, the input has {}",
                    flat.node_ids[i], flat.n_features
                ));
            }
            let mut child = |id: i64| -> Result<u32, String> {
                let &c = index.get(&(tree, id)).ok_or_else(|| {
                    format!(
                        "tree {tree} node {} points to missing node {id}",
                        flat.node_ids[i]
                    )
                })?;
                if referenced[c] {
                    return Err(format!("tree {tree} node {id} has two parents"));
                }
                referenced[c] = true;
                Ok(c as u32)
            };
            let yes = child(flat.true_ids[i])?;
            let no = child(flat.false_ids[i])?;
            nodes.push(Node {
                threshold: flat.thresholds[i],
                feature: feature as u32,
                yes,
                no,
                mode,
                missing_yes,
            });
        }
        // Roots: the unreferenced nodes, one per tree.
        let mut roots = Vec::new();
        let mut trees_seen = std::collections::HashSet::new();
        for (i, &is_child) in referenced.iter().enumerate() {
            if !is_child {
                if !trees_seen.insert(flat.tree_ids[i]) {
                    return Err(format!("tree {} has more than one root", flat.tree_ids[i]));
                }
                roots.push(i as u32);
            }
        }
        // Every node reachable from a root exactly once (parents are unique, so a node that is
        // not reached sits on a cycle), and the deepest count of distinct features on a path.
        let mut seen = vec![false; n];
        let mut max_distinct = 0usize;
        let mut stack: Vec<(u32, Vec<u32>)> = roots.iter().map(|&r| (r, Vec::new())).collect();
        while let Some((i, mut features)) = stack.pop() {
            seen[i as usize] = true;
            let node = nodes[i as usize];
            if node.mode == Mode::Leaf {
                max_distinct = max_distinct.max(features.len());
                continue;
            }
            if !features.contains(&node.feature) {
                features.push(node.feature);
            }
            stack.push((node.yes, features.clone()));
            stack.push((node.no, features));
        }
        if let Some(i) = seen.iter().position(|s| !s) {
            return Err(format!(
                "tree {} node {} is not reachable from the tree's root (a cycle)",
                flat.tree_ids[i], flat.node_ids[i]
            ));
        }
        let mut leaf_values = vec![0.0; n_leaves as usize * flat.n_outputs];
        for &(tree, node, output, weight) in &flat.weights {
            let &i = index
                .get(&(tree, node))
                .ok_or_else(|| format!("a weight names missing node {node} of tree {tree}"))?;
            if leaf_of[i] == u32::MAX {
                return Err(format!(
                    "a weight sits on tree {tree} node {node}, which is not a leaf"
                ));
            }
            if output >= flat.n_outputs {
                return Err(format!(
                    "a weight is for output {output}, the ensemble has {}",
                    flat.n_outputs
                ));
            }
            leaf_values[leaf_of[i] as usize * flat.n_outputs + output] += weight;
        }
        let side = max_distinct + 1;
        let mut pos_weights = vec![0.0; side * side];
        let mut neg_weights = vec![0.0; side * side];
        for a in 0..side {
            for b in 0..side {
                if a + b >= side {
                    continue;
                }
                if a > 0 {
                    pos_weights[a * side + b] = 1.0 / (a as f64 * binomial(a + b, a));
                }
                if b > 0 {
                    neg_weights[a * side + b] = 1.0 / (b as f64 * binomial(a + b, b));
                }
            }
        }
        Ok(TreeEnsemble {
            nodes,
            roots,
            leaf_values,
            n_outputs: flat.n_outputs,
            base: flat.base.clone(),
            n_features: flat.n_features,
            pos_weights,
            neg_weights,
            weight_side: side,
        })
    }

    /// Number of trees.
    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    /// Number of raw outputs.
    pub fn n_outputs(&self) -> usize {
        self.n_outputs
    }

    /// Input width.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Divides every leaf value by the number of trees (ONNX `aggregate_function: AVERAGE`).
    pub fn average_leaves(&mut self) {
        let n = self.roots.len() as f64;
        for v in &mut self.leaf_values {
            *v /= n;
        }
    }

    /// Raw output `output` for one row, summed in f64 (base value included).
    pub fn predict(&self, row: &[f32], output: usize) -> f64 {
        let mut sum = self.base[output];
        for &root in &self.roots {
            sum += self.leaf_values[self.leaf_of(root, row) * self.n_outputs + output];
        }
        sum
    }

    /// Every raw output for every row of a row-major matrix: `n_rows * n_outputs` values.
    pub fn predict_all(&self, data: &[f32]) -> Vec<f64> {
        let mut out = Vec::with_capacity(data.len() / self.n_features * self.n_outputs);
        for row in data.chunks_exact(self.n_features) {
            for o in 0..self.n_outputs {
                out.push(self.predict(row, o));
            }
        }
        out
    }

    fn leaf_of(&self, root: u32, row: &[f32]) -> usize {
        let mut i = root;
        loop {
            let node = &self.nodes[i as usize];
            if node.mode == Mode::Leaf {
                return node.yes as usize;
            }
            i = node.child(node.goes_yes(row[node.feature as usize]));
        }
    }

    /// Interventional SHAP values of `target` for `x` over a background set prepared by
    /// [`TreeEnsemble::background_set`].
    pub fn shap(
        &self,
        x: &[f32],
        background: &BackgroundSet,
        target: Target,
        scratch: &mut Scratch,
    ) -> TreeShap {
        let m = self.n_features;
        let n_trees = self.roots.len();
        scratch.status.clear();
        scratch.status.resize(m, FREE);
        scratch.x_yes.clear();
        scratch.x_yes.extend(
            self.nodes
                .iter()
                .map(|node| node.mode != Mode::Leaf && node.goes_yes(x[node.feature as usize])),
        );

        let margin_x = target.offset + target.sign * self.predict(x, target.output);
        let value_x = target.link.apply(margin_x);
        // Each background row's scale factor, summed into its group in every tree.
        let mut weights = std::mem::take(&mut scratch.group_weight);
        weights.clear();
        weights.resize(background.representative.len(), 0.0);
        let mut base_sum = 0.0;
        for b in 0..background.n_rows {
            let margin_r =
                target.offset + target.sign * background.raw[b * self.n_outputs + target.output];
            let value_r = target.link.apply(margin_r);
            base_sum += value_r;
            let scale = match target.link {
                Link::Identity => 1.0,
                // shap's rescaling: this row's margin attributions, scaled to add up to its
                // output difference (factor 1 when the margins are equal).
                Link::Logistic if margin_x == margin_r => 1.0,
                Link::Logistic => (value_x - value_r) / (margin_x - margin_r),
            };
            for &g in &background.group_of[b * n_trees..(b + 1) * n_trees] {
                weights[g as usize] += scale;
            }
        }
        let mut attributions = vec![0.0; m];
        for (t, &root) in self.roots.iter().enumerate() {
            let groups = background.tree_groups[t] as usize..background.tree_groups[t + 1] as usize;
            for g in groups {
                let weight = weights[g];
                if weight == 0.0 {
                    continue;
                }
                let r = background.row(background.representative[g] as usize);
                let target = Target {
                    sign: target.sign * weight,
                    ..target
                };
                self.single_reference(root, r, target, &mut attributions, scratch);
            }
        }
        scratch.group_weight = weights;
        let n = background.n_rows as f64;
        for a in &mut attributions {
            *a /= n;
        }
        TreeShap {
            attributions,
            base_value: base_sum / n,
            model_value: value_x,
        }
    }

    /// Prepares a background set (row-major, this ensemble's width) for [`TreeEnsemble::shap`]:
    /// each row's raw outputs, and per tree the rows grouped by the branch every split sends
    /// them down.
    pub fn background_set(&self, rows: &[f32]) -> BackgroundSet {
        let m = self.n_features;
        assert!(
            !rows.is_empty() && rows.len().is_multiple_of(m),
            "a non-empty row-major matrix"
        );
        let n_rows = rows.len() / m;
        let n_trees = self.roots.len();
        let mut group_of = vec![0u32; n_rows * n_trees];
        let mut representative = Vec::new();
        let mut tree_groups = vec![0u32];
        let mut internal = Vec::new();
        let mut signature: Vec<u64> = Vec::new();
        // Keyed by the signature's bits: one word for trees of up to 64 splits (no allocation),
        // the whole bitset beyond.
        let mut small: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
        let mut large: std::collections::HashMap<Vec<u64>, u32> = std::collections::HashMap::new();
        for (t, &root) in self.roots.iter().enumerate() {
            // This tree's split nodes, in a fixed order.
            internal.clear();
            let mut stack = vec![root];
            while let Some(i) = stack.pop() {
                let node = &self.nodes[i as usize];
                if node.mode != Mode::Leaf {
                    internal.push(i);
                    stack.push(node.yes);
                    stack.push(node.no);
                }
            }
            small.clear();
            large.clear();
            for (b, row) in rows.chunks_exact(m).enumerate() {
                signature.clear();
                signature.resize(internal.len().div_ceil(64).max(1), 0);
                for (k, &i) in internal.iter().enumerate() {
                    let node = &self.nodes[i as usize];
                    if node.goes_yes(row[node.feature as usize]) {
                        signature[k / 64] |= 1 << (k % 64);
                    }
                }
                let next = representative.len() as u32;
                let group = if let [word] = signature[..] {
                    *small.entry(word).or_insert(next)
                } else {
                    *large.entry(signature.clone()).or_insert(next)
                };
                if group == next {
                    representative.push(b as u32);
                }
                group_of[b * n_trees + t] = group;
            }
            tree_groups.push(representative.len() as u32);
        }
        BackgroundSet {
            rows: rows.to_vec(),
            n_rows,
            n_features: m,
            raw: self.predict_all(rows),
            tree_groups,
            representative,
            group_of,
        }
    }

    /// Adds the exact single-reference Shapley values of one tree's margin (times
    /// `target.sign`) to `phi`: the walk described in the module docs, with an explicit stack
    /// so a deep tree cannot overflow the thread's stack.
    fn single_reference(
        &self,
        root: u32,
        r: &[f32],
        target: Target,
        phi: &mut [f64],
        s: &mut Scratch,
    ) {
        s.stack.clear();
        debug_assert!(s.path.is_empty());
        let mut node_index = root;
        loop {
            let node = &self.nodes[node_index as usize];
            if node.mode == Mode::Leaf {
                self.add_leaf(node.yes as usize, target, phi, &s.path);
                // Next branch, restoring the path to where that branch was pushed.
                let Some(frame) = s.stack.pop() else {
                    break;
                };
                while s.path.len() > frame.depth {
                    let (f, _) = s.path.pop().expect("path longer than depth");
                    s.status[f as usize] = FREE;
                }
                s.path.push(frame.decided);
                s.status[frame.decided.0 as usize] = if frame.decided.1 { IN_S } else { OUT_OF_S };
                node_index = frame.node;
                continue;
            }
            let x_yes = s.x_yes[node_index as usize];
            let r_yes = node.goes_yes(r[node.feature as usize]);
            if x_yes == r_yes {
                node_index = node.child(x_yes);
                continue;
            }
            match s.status[node.feature as usize] {
                IN_S => node_index = node.child(x_yes),
                OUT_OF_S => node_index = node.child(r_yes),
                _ => {
                    s.stack.push(Frame {
                        node: node.child(r_yes),
                        depth: s.path.len(),
                        decided: (node.feature, false),
                    });
                    s.path.push((node.feature, true));
                    s.status[node.feature as usize] = IN_S;
                    node_index = node.child(x_yes);
                }
            }
        }
        for &(f, _) in &s.path {
            s.status[f as usize] = FREE;
        }
        s.path.clear();
    }

    #[inline]
    fn add_leaf(&self, leaf: usize, target: Target, phi: &mut [f64], path: &[(u32, bool)]) {
        if path.is_empty() {
            return; // x and r reach this leaf together: no feature matters here.
        }
        let value = target.sign * self.leaf_values[leaf * self.n_outputs + target.output];
        if value == 0.0 {
            return;
        }
        let a = path.iter().filter(|(_, x_side)| *x_side).count();
        let b = path.len() - a;
        let w = a * self.weight_side + b;
        let pos = value * self.pos_weights[w];
        let neg = value * self.neg_weights[w];
        for &(f, x_side) in path {
            if x_side {
                phi[f as usize] += pos;
            } else {
                phi[f as usize] -= neg;
            }
        }
    }
}

/// `n choose k` in f64 (exact for the small arguments tree depths give).
fn binomial(n: usize, k: usize) -> f64 {
    let k = k.min(n - k);
    let mut c = 1.0;
    for i in 0..k {
        c = c * (n - i) as f64 / (i + 1) as f64;
    }
    c
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small deterministic generator for test data (SplitMix64).
    pub(crate) struct Rng(pub u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        /// A value on a coarse grid, so ties with thresholds happen.
        pub(crate) fn grid(&mut self) -> f32 {
            self.below(9) as f32 * 0.25 - 1.0
        }
    }

    /// Random trees of depth up to `depth` over `m` features (features repeat on paths), with
    /// every comparison mode, `n_outputs` outputs.
    pub(crate) fn random_ensemble(
        rng: &mut Rng,
        n_trees: usize,
        depth: usize,
        m: usize,
        n_outputs: usize,
    ) -> FlatTrees {
        let modes = [
            Mode::Leq,
            Mode::Lt,
            Mode::Gte,
            Mode::Gt,
            Mode::Eq,
            Mode::Neq,
        ];
        let mut flat = FlatTrees {
            n_outputs,
            base: (0..n_outputs).map(|o| o as f64 * 0.5 - 0.25).collect(),
            n_features: m,
            ..FlatTrees::default()
        };
        for tree in 0..n_trees as i64 {
            // Breadth-first ids; each node a leaf with some probability below the top.
            let mut next_id = 1i64;
            let mut queue = vec![(0i64, 0usize)];
            while let Some((id, d)) = queue.pop() {
                flat.tree_ids.push(tree);
                flat.node_ids.push(id);
                let leaf = d == depth || (d > 0 && rng.below(4) == 0);
                if leaf {
                    flat.features.push(0);
                    flat.thresholds.push(0.0);
                    flat.modes.push(Mode::Leaf);
                    flat.true_ids.push(0);
                    flat.false_ids.push(0);
                    for o in 0..n_outputs {
                        let w = (rng.below(2001) as f64 - 1000.0) / 997.0;
                        flat.weights.push((tree, id, o, w));
                    }
                } else {
                    flat.features.push(rng.below(m) as i64);
                    flat.thresholds.push(f64::from(rng.grid()));
                    flat.modes.push(modes[rng.below(modes.len())]);
                    flat.true_ids.push(next_id);
                    flat.false_ids.push(next_id + 1);
                    queue.push((next_id, d + 1));
                    queue.push((next_id + 1, d + 1));
                    next_id += 2;
                }
            }
        }
        flat
    }

    fn random_rows(rng: &mut Rng, n: usize, m: usize) -> Vec<f32> {
        (0..n * m).map(|_| rng.grid()).collect()
    }

    /// Shapley values of a set function over `m` players by enumerating every coalition.
    pub(crate) fn brute_force_shapley(m: usize, v: impl Fn(u32) -> f64) -> Vec<f64> {
        let values: Vec<f64> = (0..1u32 << m).map(&v).collect();
        let mut factorial = vec![1.0f64; m + 1];
        for i in 1..=m {
            factorial[i] = factorial[i - 1] * i as f64;
        }
        (0..m)
            .map(|i| {
                let mut phi = 0.0;
                for s in 0..1u32 << m {
                    if s & (1 << i) != 0 {
                        continue;
                    }
                    let k = s.count_ones() as usize;
                    let w = factorial[k] * factorial[m - k - 1] / factorial[m];
                    phi += w * (values[(s | (1 << i)) as usize] - values[s as usize]);
                }
                phi
            })
            .collect()
    }

    /// `x` on the features of `s`, `r` elsewhere.
    fn hybrid(x: &[f32], r: &[f32], s: u32) -> Vec<f32> {
        (0..x.len())
            .map(|i| if s & (1 << i) != 0 { x[i] } else { r[i] })
            .collect()
    }

    #[test]
    fn margins_match_brute_force_enumeration_on_random_trees() {
        let mut rng = Rng(7);
        for case in 0..40 {
            let m = 1 + case % 6;
            let n_outputs = 1 + case % 3;
            let flat = random_ensemble(&mut rng, 1 + case % 4, 1 + case % 5, m, n_outputs);
            let trees = TreeEnsemble::from_flat(&flat).unwrap();
            let background = random_rows(&mut rng, 1 + case % 5, m);
            let set = trees.background_set(&background);
            let x = random_rows(&mut rng, 1, m);
            let output = case % n_outputs;
            let sign = if case % 2 == 0 { 1.0 } else { -1.0 };
            let offset = (case % 3) as f64 * 0.5;
            let target = Target {
                output,
                sign,
                offset,
                link: Link::Identity,
            };
            let got = trees.shap(&x, &set, target, &mut Scratch::default());
            let n_bg = background.len() / m;
            let expected = brute_force_shapley(m, |s| {
                background
                    .chunks_exact(m)
                    .map(|r| offset + sign * trees.predict(&hybrid(&x, r, s), output))
                    .sum::<f64>()
                    / n_bg as f64
            });
            for (g, e) in got.attributions.iter().zip(&expected) {
                assert!(
                    (g - e).abs() < 1e-12,
                    "case {case}: {got:?} vs {expected:?}"
                );
            }
            let sum: f64 = got.attributions.iter().sum();
            assert!((got.base_value + sum - got.model_value).abs() < 1e-12);
            assert!((got.model_value - offset - sign * trees.predict(&x, output)).abs() < 1e-15);
        }
    }

    #[test]
    fn deep_trees_group_background_rows_by_their_whole_path_signature() {
        // Trees with more than 64 splits key their groups by a multi-word bitset.
        let mut rng = Rng(21);
        let m = 5;
        let mut flat = random_ensemble(&mut rng, 2, 11, m, 1);
        let splits = |flat: &FlatTrees| {
            (0..flat.modes.len())
                .filter(|&i| flat.tree_ids[i] == 0 && flat.modes[i] != Mode::Leaf)
                .count()
        };
        while splits(&flat) <= 64 {
            flat = random_ensemble(&mut rng, 2, 11, m, 1);
        }
        let trees = TreeEnsemble::from_flat(&flat).unwrap();
        // Every row twice: identical rows share their group in every tree.
        let distinct = random_rows(&mut rng, 20, m);
        let background: Vec<f32> = distinct
            .chunks_exact(m)
            .flat_map(|r| [r, r])
            .flatten()
            .copied()
            .collect();
        let set = trees.background_set(&background);
        assert!(
            set.n_groups() <= 2 * 20,
            "duplicates grouped: {}",
            set.n_groups()
        );
        let x = random_rows(&mut rng, 1, m);
        let target = Target {
            output: 0,
            sign: 1.0,
            offset: 0.0,
            link: Link::Identity,
        };
        let got = trees.shap(&x, &set, target, &mut Scratch::default());
        let expected = brute_force_shapley(m, |s| {
            background
                .chunks_exact(m)
                .map(|r| trees.predict(&hybrid(&x, r, s), 0))
                .sum::<f64>()
                / 40.0
        });
        for (g, e) in got.attributions.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-12, "{got:?} vs {expected:?}");
        }
        assert!(got.attributions.iter().any(|a| a.abs() > 1e-6));
    }

    #[test]
    fn probabilities_follow_shaps_per_reference_rescaling() {
        let mut rng = Rng(11);
        for case in 0..30 {
            let m = 2 + case % 5;
            let flat = random_ensemble(&mut rng, 2 + case % 3, 2 + case % 3, m, 1);
            let trees = TreeEnsemble::from_flat(&flat).unwrap();
            let background = random_rows(&mut rng, 2 + case % 4, m);
            let set = trees.background_set(&background);
            let x = random_rows(&mut rng, 1, m);
            let sign = if case % 2 == 0 { 1.0 } else { -1.0 };
            let target = Target {
                output: 0,
                sign,
                offset: 0.0,
                link: Link::Logistic,
            };
            let got = trees.shap(&x, &set, target, &mut Scratch::default());
            // Reference: per background row, brute-force margin Shapley values, rescaled.
            let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
            let mx = sign * trees.predict(&x, 0);
            let mut expected = vec![0.0; m];
            let mut base = 0.0;
            let rows: Vec<&[f32]> = background.chunks_exact(m).collect();
            for r in &rows {
                let mr = sign * trees.predict(r, 0);
                let phi = brute_force_shapley(m, |s| sign * trees.predict(&hybrid(&x, r, s), 0));
                let scale = if mx == mr {
                    1.0
                } else {
                    (sigmoid(mx) - sigmoid(mr)) / (mx - mr)
                };
                for (e, p) in expected.iter_mut().zip(&phi) {
                    *e += p * scale / rows.len() as f64;
                }
                base += sigmoid(mr) / rows.len() as f64;
            }
            for (g, e) in got.attributions.iter().zip(&expected) {
                assert!(
                    (g - e).abs() < 1e-12,
                    "case {case}: {got:?} vs {expected:?}"
                );
            }
            assert!((got.base_value - base).abs() < 1e-15);
            let sum: f64 = got.attributions.iter().sum();
            assert!((got.base_value + sum - sigmoid(mx)).abs() < 1e-12);
        }
    }

    #[test]
    fn comparison_modes_and_missing_values_follow_onnx_runtime() {
        let node = |mode, missing_yes| Node {
            threshold: 0.5,
            feature: 0,
            yes: 1,
            no: 2,
            mode,
            missing_yes,
        };
        let cases = [
            (Mode::Leq, [true, true, false]),
            (Mode::Lt, [true, false, false]),
            (Mode::Gte, [false, true, true]),
            (Mode::Gt, [false, false, true]),
            (Mode::Eq, [false, true, false]),
            (Mode::Neq, [true, false, true]),
        ];
        for (mode, expected) in cases {
            let got = [0.25f32, 0.5, 0.75].map(|v| node(mode, false).goes_yes(v));
            assert_eq!(got, expected, "{mode:?}");
        }
        assert!(node(Mode::Leq, true).goes_yes(f32::NAN));
        assert!(!node(Mode::Leq, false).goes_yes(f32::NAN));
    }

    #[test]
    fn malformed_ensembles_are_refused_with_a_reason() {
        let mut rng = Rng(3);
        let good = random_ensemble(&mut rng, 2, 2, 3, 1);
        assert!(TreeEnsemble::from_flat(&good).is_ok());

        let mut bad_feature = good.clone();
        let i = bad_feature
            .modes
            .iter()
            .position(|m| *m != Mode::Leaf)
            .unwrap();
        bad_feature.features[i] = 3;
        assert!(TreeEnsemble::from_flat(&bad_feature)
            .unwrap_err()
            .contains("feature 3"));

        let mut missing_child = good.clone();
        missing_child.true_ids[i] = 999;
        assert!(TreeEnsemble::from_flat(&missing_child)
            .unwrap_err()
            .contains("missing node 999"));

        let mut weight_on_branch = good.clone();
        weight_on_branch
            .weights
            .push((good.tree_ids[i], good.node_ids[i], 0, 1.0));
        assert!(TreeEnsemble::from_flat(&weight_on_branch)
            .unwrap_err()
            .contains("not a leaf"));

        let mut cycle = good.clone();
        let j = cycle.modes.iter().rposition(|m| *m != Mode::Leaf).unwrap();
        let root_id = cycle.node_ids[cycle
            .tree_ids
            .iter()
            .position(|t| *t == cycle.tree_ids[j])
            .unwrap()];
        if cycle.node_ids[j] != root_id {
            cycle.false_ids[j] = root_id;
            assert!(TreeEnsemble::from_flat(&cycle).is_err());
        }
    }

    #[test]
    fn averaging_divides_leaves_by_the_tree_count() {
        let mut rng = Rng(5);
        let flat = random_ensemble(&mut rng, 4, 2, 3, 1);
        let summed = TreeEnsemble::from_flat(&flat).unwrap();
        let mut averaged = summed.clone();
        averaged.average_leaves();
        let x = random_rows(&mut rng, 1, 3);
        let base = flat.base[0];
        let expected = (summed.predict(&x, 0) - base) / 4.0 + base;
        assert!((averaged.predict(&x, 0) - expected).abs() < 1e-12);
    }
}
