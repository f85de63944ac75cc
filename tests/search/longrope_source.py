"""microsoft/LongRoPE's evolution search (commit c9e56aa), rewritten from its files as the oracle of
ropekit's: ``evolution/algorithms/genetic_base.py`` (``Individual``, ``GeneticAlgorithm``, with its
evaluator queue replaced by scoring each individual when it is made: the queue only defers the scores,
which no random draw reads), ``evolution/algorithms/dim_mono.py`` and ``dim_piece_mono.py`` (verbatim but
for the logging and progress bars), and ``evolution/search.py``'s ``set_seed`` (numpy's global generator)
and YaRN initial factors (``rope/yarn.py``)."""

from __future__ import annotations

import math

import numpy as np
import torch


class Individual:
    def __init__(self, factors, ppl=None):
        self.factors = factors
        self.ppl = ppl

    def __eq__(self, other):
        return np.allclose(self.factors, other.factors)


class GeneticAlgorithm:
    def __init__(self, objective, scale, hyper_params, init_factors):
        self.objective = objective
        self.scale = scale
        self.history = []
        evo_scale = hyper_params["evo_scale"]
        self.population_size = int(evo_scale * hyper_params["population_size"])
        self.max_time_budget = int(evo_scale * hyper_params["max_time_budget"])
        self.mutation_numbers = int(evo_scale * hyper_params["mutation_numbers"])
        self.crossover_size = int(evo_scale * hyper_params["crossover_size"])
        self.max_crossover_try = int(evo_scale * hyper_params["max_crossover_try"])
        self.parents_size = int(evo_scale * hyper_params["parents_size"])
        self.list_step = hyper_params["list_step"]
        self.head_size = init_factors.shape[0] * 2
        self.init_factors = self.preprocess_init_factors(init_factors)
        self.made = []  # every individual in the order it was made (scored)
        self.best_ppl_records = []

    def preprocess_init_factors(self, factors):
        return factors

    def extract_factors(self, factors):
        return factors

    def make_indv(self, factors):
        indv = Individual(factors)
        indv.ppl = self.objective(np.asarray(self.extract_factors(factors)))
        self.made.append(indv)
        return indv

    def run_genetic_algorithm(self):
        population = []
        latest_iteration = 0
        for i in range(self.population_size):
            if i == 0:
                indv = self.make_indv(self.init_factors)
                new_indv = indv
            else:
                new_indv = self.mutate(indv)
            population.append(new_indv)
            self.history.append(new_indv)
        for _i in range(latest_iteration, latest_iteration + self.max_time_budget):
            parents = sorted(population, key=lambda x: x.ppl)[: self.parents_size]
            self.best_ppl_records.append(parents[0].ppl)
            population = parents
            for _j in range(self.mutation_numbers):
                idx = np.random.randint(self.parents_size)
                mutated_indv = self.mutate(parents[idx])
                population.append(mutated_indv)
            for _j in range(self.crossover_size):
                idx1, idx2 = np.random.choice(self.parents_size, 2, replace=False)
                idx1, idx2 = sorted([idx1, idx2])
                crossover_indv = self.crossover(parents[idx1], parents[idx2])
                if crossover_indv is None:
                    crossover_indv = self.mutate(parents[idx1])
                population.append(crossover_indv)
        final_population = sorted(population, key=lambda x: x.ppl)[: self.parents_size]
        self.best_ppl_records.append(final_population[0].ppl)
        return final_population[0].factors


class DimMonoGeneticAlgorithm(GeneticAlgorithm):
    def mutate(self, indv):
        list_step = self.list_step
        evo_list = np.arange(1.0, 1.0 + self.scale + list_step, list_step)

        new_factors = indv.factors
        while (Individual(new_factors) in self.history) or (not np.all(np.diff(new_factors) >= 0)):
            for dim in range(new_factors.shape[0]):
                if np.random.rand() < 0.3:
                    if dim == 0:
                        evo_list_curr = np.arange(1.0, new_factors[dim + 1], list_step)
                    elif dim == new_factors.shape[0] - 1:
                        evo_list_curr = np.arange(new_factors[dim - 1], evo_list.max() + list_step, list_step)
                    else:
                        evo_list_curr = np.arange(new_factors[dim - 1], new_factors[dim + 1] + list_step, list_step)

                    if evo_list_curr.shape[0] > 0:
                        layer_index = np.random.randint(0, evo_list_curr.shape[0])
                        new_factors = new_factors.copy()
                        new_factors[dim] = evo_list_curr[layer_index]

        indv = self.make_indv(new_factors)
        self.history.append(indv)
        return indv

    def crossover(self, indv_1, indv_2):
        par_factors_1 = indv_1.factors
        par_factors_2 = indv_2.factors
        if np.allclose(par_factors_1, par_factors_2):
            return None
        new_factors = par_factors_1.copy()
        for _ in range(self.max_crossover_try):
            for i in range(new_factors.shape[0]):
                if np.random.rand() < 0.3:
                    new_factors = new_factors.copy()
                    if np.random.rand() < 0.5:
                        new_factors[i] = par_factors_2[i]
                    if (Individual(new_factors) in self.history) or (not np.all(np.diff(new_factors) >= 0)):
                        continue
                    indv = self.make_indv(new_factors)
                    self.history.append(indv)
                    return indv
        return None


class DimPieceMonoGeneticAlgorithm(GeneticAlgorithm):
    def preprocess_init_factors(self, factors):
        return np.concatenate([[0, 0], factors])

    def extract_factors(self, factors):
        return factors[2:]

    def mutate(self, indv):
        list_step = self.list_step
        evo_list = np.arange(1.0, 1.0 + self.scale + list_step, list_step)

        new_factors = indv.factors
        while (Individual(new_factors) in self.history) or (not np.all(np.diff(new_factors[2:]) >= 0)):
            alpha_dim = new_factors[0]
            beta_dim = new_factors[1]
            std_dev = 2.0

            if np.random.rand() < 0.5:
                alpha_dim = int(np.random.normal(alpha_dim, std_dev))
            else:
                beta_dim = int(np.random.normal(beta_dim, std_dev))

            while not (0 <= alpha_dim < beta_dim < self.head_size // 2):
                if np.random.rand() < 0.5:
                    alpha_dim = int(np.random.normal(alpha_dim, std_dev)) * 1.0
                else:
                    beta_dim = int(np.random.normal(beta_dim, std_dev)) * 1.0

            new_factors = new_factors.copy()
            new_factors[0] = alpha_dim
            new_factors[1] = beta_dim

            for dim in range(2, new_factors.shape[0] - 2):
                if np.random.rand() < 0.3:
                    if dim <= alpha_dim + 2:
                        new_factors[dim] = 1.0
                    elif dim > beta_dim + 2:
                        new_factors[dim] = self.scale
                    else:
                        if dim == 2 + 0:
                            evo_list_curr = np.arange(1.0, new_factors[dim + 1], list_step)
                        elif dim == 2 + new_factors.shape[0] - 1:
                            evo_list_curr = np.arange(new_factors[dim - 1], evo_list.max() + list_step, list_step)
                        else:
                            evo_list_curr = np.arange(new_factors[dim - 1], new_factors[dim + 1] + list_step, list_step)
                        if evo_list_curr.shape[0] > 0:
                            layer_index = np.random.randint(0, evo_list_curr.shape[0])
                            new_factors = new_factors.copy()
                            new_factors[dim] = evo_list_curr[layer_index]

        indv = self.make_indv(new_factors)
        self.history.append(indv)
        return indv

    def crossover(self, indv_1, indv_2):
        par_factors_1 = indv_1.factors
        par_factors_2 = indv_2.factors
        if np.allclose(par_factors_1, par_factors_2):
            return None
        new_factors = par_factors_1.copy()
        for _ in range(self.max_crossover_try):
            for i in range(new_factors.shape[0]):
                if np.random.rand() < 0.3:
                    new_factors = new_factors.copy()
                    if np.random.rand() < 0.5:
                        if i < 2:
                            new_factors[0] = par_factors_2[0]
                            new_factors[1] = par_factors_2[1]
                        else:
                            new_factors[i] = par_factors_2[i]
                    if (
                        (Individual(new_factors) in self.history)
                        or (new_factors[0] > new_factors[1])
                        or (not np.all(np.diff(new_factors[2:]) >= 0))
                    ):
                        continue
                    indv = self.make_indv(new_factors)
                    self.history.append(indv)
                    return indv
        return None


def set_seed(seed=42):
    np.random.seed(seed)


def yarn_init_factors(dim, base, scale, original_max_position_embeddings, beta_fast=32, beta_slow=1):
    """evolution/search.py's initial factors: YaRNScaledRotaryEmbedding's inv_freq_mask (rope/yarn.py)."""

    def find_correction_dim(num_rotations):
        return (dim * math.log(original_max_position_embeddings / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low = max(math.floor(find_correction_dim(beta_fast)), 0)
    high = min(math.ceil(find_correction_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    mask = 1 - ramp
    return (scale * (1 - mask) + 1.0 * mask).numpy().astype(np.float64)


def compute_perplexity(encoded_texts, model, bos_token_id, num_tokens):
    """evaluation/perplexity.py's ``compute_perplexity`` as its search runs it (``--truncate``,
    ``add_start_token``; CPU, no cache): each text cut to num_tokens - 1 ids after a BOS, one window,
    transformers' mean loss per text, exp of their mean. ``encoded_texts``: utils/tokenize_dataset.py's
    ids (``add_special_tokens=False``)."""
    max_tokenized_len = num_tokens - 1
    encoded_texts = [x[:max_tokenized_len] for x in encoded_texts]
    sliding_window = max_tokenized_len
    max_sliding_count = 10
    nlls = []
    for encoded_text in encoded_texts:
        labels = torch.tensor([encoded_text])
        seq_len = labels.size(1)
        seq_len = min(seq_len, max_sliding_count * sliding_window)
        prev_end_loc = 0
        for begin_loc in range(0, seq_len, sliding_window):
            end_loc = min(begin_loc + max_tokenized_len, seq_len)
            trg_len = end_loc - prev_end_loc
            input_ids = labels[:, begin_loc:end_loc]
            bos_tokens_tensor = torch.tensor([[bos_token_id]] * input_ids.size(0))
            input_ids = torch.cat([bos_tokens_tensor, input_ids], dim=1)
            target_ids = input_ids.clone()
            target_ids[:, :-trg_len] = -100
            with torch.no_grad():
                outputs = model(input_ids, labels=target_ids, use_cache=False)
            nlls.append(outputs.loss)
            prev_end_loc = end_loc
            if end_loc == seq_len:
                break
    return float(torch.exp(torch.stack(nlls).mean()).float())
