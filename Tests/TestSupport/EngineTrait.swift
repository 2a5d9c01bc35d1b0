import Testing

extension Trait where Self == ConditionTrait {
    /// Runs when an engine answers, or when CORRAL_REQUIRE_ENGINE=1 demands it (then a
    /// missing engine fails the test instead of skipping it). Otherwise the test is skipped
    /// and the reason printed.
    public static var engine: ConditionTrait {
        .enabled(if: TestEnvironment.shouldRunEngineTests, Comment(rawValue: TestEnvironment.engineSkipReason))
    }
}
