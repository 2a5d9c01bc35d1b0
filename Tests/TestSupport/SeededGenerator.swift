import CorralCore

/// A deterministic generator, so that a failing random case can be replayed from its seed.
public typealias SeededGenerator = SplitMix64
