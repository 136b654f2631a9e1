//! Boosted trees laid out for scoring: a request's few rows, or a test window's many.
//!
//! forust-ml's nodes carry what training needed (gain, hessian sum, depth, …): 88 bytes
//! each, so the ranker's 300 trees of depth 6 span megabytes and a walk misses the cache
//! at nearly every step. [`Forest`] keeps only what a walk reads, 24 bytes a node, every
//! tree in one vector. It computes exactly what forust-ml's prediction does (the same
//! comparisons, leaf values widened from `f32` the same way, the sum in tree order), which
//! the trainer's tests check bit for bit; unlike it, a NaN where the booster's missing
//! value is a number takes the missing branch instead of panicking.

use forust_ml::GradientBooster;

use super::artifact::trees_used;

/// Rows walked together (see [`Forest::logits`]): a request's candidates (five in the
/// scheduler's usual call) in one block, few enough rows for their positions and values
/// to stay in the first-level cache.
const BLOCK: usize = 16;

/// Trees walked together (see [`Forest::logits`]).
const TREES: usize = 8;

/// One node: a split (`value` is the threshold) or a leaf (`value` is its log-odds).
#[derive(Debug, Clone, Copy)]
struct Node {
    value: f64,
    /// The column a split reads; 0 for a leaf, whose children are itself.
    feature: u32,
    /// Where a row goes from here, by [`Branch`]. A leaf's children are its own index, so
    /// a row that has reached it stays there however many more steps it takes.
    children: [u32; 3],
}

/// The index into [`Node::children`] of each way down a split.
#[derive(Debug, Clone, Copy)]
enum Branch {
    Below = 0,
    AtOrAbove = 1,
    Missing = 2,
}

/// The trees a booster predicts with, flattened.
#[derive(Debug, Clone)]
pub struct Forest {
    base_score: f64,
    missing: f64,
    /// Every tree's nodes, tree after tree; children are indices into this vector.
    nodes: Vec<Node>,
    /// Each tree's root in `nodes`, and the most steps from it to a leaf.
    roots: Vec<(u32, u32)>,
}

impl Forest {
    /// The trees `booster` predicts with. The booster must be one a walk can finish on
    /// (children after their parents, inside the tree), as the artifact checks at load.
    pub fn of(booster: &GradientBooster) -> Self {
        let trees = &booster.trees[..trees_used(booster)];
        let mut nodes = Vec::with_capacity(trees.iter().map(|t| t.nodes.len()).sum());
        let mut roots = Vec::with_capacity(trees.len());
        for tree in trees {
            let start = nodes.len();
            let at = |child: usize| index(start + child);
            // Children come after their parents, so one pass down the list finds each
            // node's depth.
            let mut depths = vec![0u32; tree.nodes.len()];
            for (i, node) in tree.nodes.iter().enumerate() {
                if !node.is_leaf {
                    for child in [node.left_child, node.right_child, node.missing_node] {
                        depths[child] = depths[i] + 1;
                    }
                }
            }
            roots.push((index(start), depths.iter().copied().max().unwrap_or(0)));
            nodes.extend(tree.nodes.iter().enumerate().map(|(i, node)| {
                if node.is_leaf {
                    Node {
                        value: f64::from(node.weight_value),
                        feature: 0,
                        children: [at(i); 3],
                    }
                } else {
                    Node {
                        value: node.split_value,
                        feature: index(node.split_feature),
                        children: [
                            at(node.left_child),
                            at(node.right_child),
                            at(node.missing_node),
                        ],
                    }
                }
            }));
        }
        Self {
            base_score: booster.base_score,
            missing: booster.missing,
            nodes,
            roots,
        }
    }

    /// The log-odds of encoded rows (`width` values each, one after another).
    ///
    /// Rows are taken 16 at a time and trees 8 at a time, and every row of the block steps
    /// down the 8 trees in lockstep: a step's node loads do not wait on one another, so
    /// they overlap, where one row down one tree waits on each load in turn (BENCHMARKS.md,
    /// "The pure steps of a request"). Each row's sum still runs in tree order, so the
    /// result is bit for bit the row-at-a-time one.
    pub fn logits(&self, encoded: &[f64], width: usize) -> Vec<f64> {
        // A model has columns (the artifact's check); this only keeps `chunks` from panicking.
        let width = width.max(1);
        let mut sums = Vec::with_capacity(encoded.len() / width);
        for block in encoded.chunks(BLOCK * width) {
            let rows: Vec<&[f64]> = block.chunks_exact(width).collect();
            let mut block_sums = [self.base_score; BLOCK];
            let mut at = [[0u32; BLOCK]; TREES];
            for trees in self.roots.chunks(TREES) {
                let at = &mut at[..trees.len()];
                for (at, &(root, _)) in at.iter_mut().zip(trees) {
                    at.fill(root);
                }
                // Every row takes the deepest tree's depth (one at a leaf stays there), so
                // no step asks whether a row has arrived.
                let depth = trees.iter().map(|&(_, depth)| depth).max().unwrap_or(0);
                for _ in 0..depth {
                    for at in at.iter_mut() {
                        for (node_at, row) in at.iter_mut().zip(&rows) {
                            *node_at = self.next(&self.nodes[*node_at as usize], row);
                        }
                    }
                }
                for at in at.iter() {
                    for (sum, &leaf) in block_sums.iter_mut().zip(&at[..rows.len()]) {
                        *sum += self.nodes[leaf as usize].value;
                    }
                }
            }
            sums.extend_from_slice(&block_sums[..rows.len()]);
        }
        sums
    }

    /// The child of `node` that `row` goes to (a leaf's is itself). The way is computed,
    /// not branched on: which way a row goes is what a branch predictor cannot guess.
    fn next(&self, node: &Node, row: &[f64]) -> u32 {
        let value = row[node.feature as usize];
        let missing = self.is_missing(value);
        let branch = if missing {
            Branch::Missing
        } else if value < node.value {
            Branch::Below
        } else {
            Branch::AtOrAbove
        };
        node.children[branch as usize]
    }

    fn is_missing(&self, value: f64) -> bool {
        value.is_nan() || value == self.missing
    }
}

/// A node or feature index as stored; the artifact's check bounds them far below this.
fn index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use forust_ml::Matrix;
    use proptest::prelude::*;

    use super::*;
    use crate::models::artifact::to_column_major;

    /// A booster fitted on two columns, the second missing in a third of the rows (so
    /// its trees have missing branches of their own).
    fn booster() -> GradientBooster {
        let rows = 600;
        let mut values = Vec::with_capacity(rows * 2);
        let mut targets = Vec::with_capacity(rows);
        for i in 0..rows {
            let x = (i as f64 * 0.37).sin();
            let z = if i % 3 == 0 {
                f64::NAN
            } else {
                (i as f64 * 0.11).cos()
            };
            values.extend([x, z]);
            targets.push(f64::from(u8::from(x + z.max(0.0) > 0.3)));
        }
        let columns = to_column_major(&values, rows, 2);
        let mut booster = GradientBooster::default()
            // Not a multiple of the trees walked together.
            .set_iterations(43)
            .set_max_depth(4)
            .set_learning_rate(0.3)
            .set_parallel(false);
        booster
            .fit(
                &Matrix::new(&columns, rows, 2),
                &targets,
                &vec![1.0; rows],
                None,
            )
            .unwrap();
        booster
    }

    proptest! {
        /// The flattened walk is forust-ml's prediction, bit for bit, missing values too.
        #[test]
        fn the_flat_walk_is_forust_mls_prediction(
            // Past one block of rows and not a multiple of it.
            rows in proptest::collection::vec(
                (-1.5f64..1.5, prop_oneof![Just(f64::NAN), -1.5f64..1.5]), 1..60),
        ) {
            let booster = booster();
            let values: Vec<f64> = rows.iter().flat_map(|&(x, z)| [x, z]).collect();
            let columns = to_column_major(&values, rows.len(), 2);
            let expected = booster.predict(&Matrix::new(&columns, rows.len(), 2), false);
            let forest = Forest::of(&booster);
            prop_assert_eq!(forest.logits(&values, 2), expected);
        }
    }
}
