"""Per-clone reseeding: generators found in the golden get fresh seeds."""

import random
import types
import unittest

from reflow import entropy


class RandomState:
    """Stands in for numpy's legacy generator (matched by module and name)."""

    def __init__(self):
        self.seeds = []

    def seed(self, seed):
        self.seeds.append(seed)


RandomState.__module__ = "numpy.random.mtrand"


class EntropyTest(unittest.TestCase):
    def test_generators_held_by_modules_are_found_once_and_reseeded(self):
        shared = random.Random(7)
        legacy = RandomState()
        preloaded = types.ModuleType("preloaded")
        preloaded.rng = shared
        preloaded.alias = shared
        preloaded.legacy = legacy
        preloaded.not_a_generator = 7
        preloaded.system = random.SystemRandom()
        self.assertEqual(entropy.find_generators([preloaded]), 2)
        twin = random.Random(7)
        entropy.reseed()
        self.assertNotEqual(shared.random(), twin.random())
        self.assertEqual(len(legacy.seeds), 1)
        self.assertEqual(len(legacy.seeds[0]), 8)

    def test_the_random_module_itself_is_reseeded(self):
        entropy.find_generators([])
        random.seed(1)
        first = random.random()
        random.seed(1)
        entropy.reseed()
        self.assertNotEqual(random.random(), first)


if __name__ == "__main__":
    unittest.main()
