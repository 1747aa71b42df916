//! The training problem: a dataset pair, an engine and the gradient field it defines.

use crate::engine::{Engine, Sensitivities};
use crate::forward::{Evaluation, PairIndex, evaluate};
use crate::observables::Observation;
use crate::task::TaskData;

/// Training and test data bound to an engine, with reusable buffers.
///
/// Every method that takes a state `y` expects the flat layout of `engine`.
pub struct Dynamics {
    pub data: TaskData,
    engine: Box<dyn Engine>,
    train_pairs: PairIndex,
    test_pairs: PairIndex,
    gamma: Vec<f64>,
    train_scores: Vec<f64>,
    test_scores: Vec<f64>,
    pub train_eval: Evaluation,
    pub test_eval: Evaluation,
    /// Number of gradient evaluations so far (forward and backward pass on the training set).
    pub gradient_evaluations: u64,
    /// Buffers of the gradient-flow stepper, kept between solver calls.
    pub(crate) stepper: Option<crate::dopri5::Dopri5>,
}

impl Dynamics {
    /// Binds `data` to `engine`; both must use the same vocabulary size.
    pub fn new(data: TaskData, engine: Box<dyn Engine>) -> Dynamics {
        assert_eq!(data.train.vocab_size, engine.vocab_size());
        assert_eq!(data.test.vocab_size, engine.vocab_size());
        let train_pairs = PairIndex::new(&data.train);
        let test_pairs = PairIndex::new(&data.test);
        Dynamics {
            gamma: vec![0.0; engine.vocab_size()],
            train_scores: vec![0.0; train_pairs.pairs.len()],
            test_scores: vec![0.0; test_pairs.pairs.len()],
            train_eval: Evaluation::new(&data.train, &train_pairs),
            test_eval: Evaluation::new(&data.test, &test_pairs),
            train_pairs,
            test_pairs,
            engine,
            data,
            gradient_evaluations: 0,
            stepper: None,
        }
    }

    pub fn engine(&self) -> &dyn Engine {
        self.engine.as_ref()
    }

    /// Runs the forward and backward pass on the training set at `y`; the results stay in
    /// `train_eval` for [`Dynamics::flow`] and [`Dynamics::descent_step`].
    pub fn evaluate_train(&mut self, y: &[f64]) {
        self.engine.readouts(y, &mut self.gamma);
        self.engine
            .scores(y, &self.train_pairs.pairs, &mut self.train_scores);
        evaluate(
            &self.data.train,
            &self.train_pairs,
            &self.gamma,
            &self.train_scores,
            self.engine.width(),
            true,
            &mut self.train_eval,
        );
        self.gradient_evaluations += 1;
    }

    /// Runs the forward pass only on the training set at `y` (loss, outputs, g), leaving
    /// the sensitivities of an earlier call stale.
    pub fn evaluate_train_forward(&mut self, y: &[f64]) {
        self.engine.readouts(y, &mut self.gamma);
        self.engine
            .scores(y, &self.train_pairs.pairs, &mut self.train_scores);
        evaluate(
            &self.data.train,
            &self.train_pairs,
            &self.gamma,
            &self.train_scores,
            self.engine.width(),
            false,
            &mut self.train_eval,
        );
    }

    /// Writes the gradient-flow field -grad L(y) into `dy`. The training outputs and margins
    /// at `y` stay in `train_eval`.
    pub fn flow(&mut self, y: &[f64], dy: &mut [f64]) {
        self.evaluate_train(y);
        let sens = Sensitivities {
            rho: &self.train_eval.rho,
            pairs: &self.train_pairs.pairs,
            delta: &self.train_eval.delta,
        };
        self.engine.flow(y, &sens, dy);
    }

    /// Applies one gradient-descent step of size `eta` using the sensitivities of the last
    /// [`Dynamics::evaluate_train`] call, which must have been made at this same `y`.
    pub fn descent_step(&mut self, y: &mut [f64], eta: f64) {
        let sens = Sensitivities {
            rho: &self.train_eval.rho,
            pairs: &self.train_pairs.pairs,
            delta: &self.train_eval.delta,
        };
        self.engine.descent_step(y, &sens, eta);
    }

    /// Smallest training margin min_i y_i F_i of the last training evaluation.
    pub fn min_margin(&self) -> f64 {
        self.train_eval.min_margin()
    }

    /// Runs the forward pass on the test set at `y`, leaving the results in `test_eval`.
    pub fn evaluate_test(&mut self, y: &[f64]) {
        self.engine.readouts(y, &mut self.gamma);
        self.engine
            .scores(y, &self.test_pairs.pairs, &mut self.test_scores);
        evaluate(
            &self.data.test,
            &self.test_pairs,
            &self.gamma,
            &self.test_scores,
            self.engine.width(),
            false,
            &mut self.test_eval,
        );
    }

    /// Evaluates every recorded observable at time `t` and state `y`.
    pub fn observe(&mut self, t: f64, y: &[f64]) -> Observation {
        self.evaluate_test(y);
        self.evaluate_train(y);
        let summary = self.engine.summary(y);
        Observation::new(
            t,
            &self.data,
            &self.train_eval,
            &self.test_eval,
            &self.gamma,
            &summary,
        )
    }
}
