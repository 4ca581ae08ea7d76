namespace AttributionFleet.Engine.Faithfulness;

/// <summary>Mean, 5th and 95th percentile of a metric over a job's texts (nearest rank; non-finite values left out and counted).</summary>
public sealed record Summary(int Count, double Mean, double P5, double P95, int NonFinite)
{
    public static Summary? Of(IEnumerable<double> values)
    {
        var all = values.ToList();
        var finite = all.Where(double.IsFinite).OrderBy(v => v).ToList();
        if (finite.Count == 0) return all.Count == 0 ? null : new Summary(0, double.NaN, double.NaN, double.NaN, all.Count);
        double Rank(double q) => finite[Math.Clamp((int)Math.Ceiling(q * finite.Count) - 1, 0, finite.Count - 1)];
        return new Summary(finite.Count, finite.Average(), Rank(0.05), Rank(0.95), all.Count - finite.Count);
    }
}
