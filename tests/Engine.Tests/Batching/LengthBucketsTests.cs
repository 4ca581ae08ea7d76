using AttributionFleet.Engine.Text;
using Xunit;

namespace AttributionFleet.Engine.Tests.Batching;

/// <summary>The bucket planner: cost decides between padding waste, reference rows and passes.</summary>
public class LengthBucketsTests
{
    [Fact]
    public void EveryTextLandsInExactlyOneBatchNoLargerThanTheBatchSize()
    {
        var lengths = Enumerable.Range(0, 57).Select(i => 20 + (i * 37) % 90).ToList();
        var buckets = LengthBuckets.Plan(lengths, 8, BucketCostModel.Cpu(768));
        Assert.Equal(Enumerable.Range(0, lengths.Count), buckets.SelectMany(b => b).OrderBy(i => i));
        Assert.All(buckets, b => Assert.InRange(b.Count, 1, 8));
        // Longest first, inside and across batches.
        var flat = buckets.SelectMany(b => b).Select(i => lengths[i]).ToList();
        Assert.Equal(flat.OrderByDescending(l => l), flat);
    }

    [Fact]
    public void ShortTextsAreNotPaddedToLongOnes()
    {
        var lengths = Enumerable.Repeat(128, 8).Concat(Enumerable.Repeat(16, 8)).ToList();
        var buckets = LengthBuckets.Plan(lengths, 16, BucketCostModel.Cpu(768));
        Assert.Equal(2, buckets.Count);
        Assert.All(buckets, b => Assert.Single(b.Select(i => lengths[i]).Distinct()));
    }

    [Fact]
    public void NearbyLengthsShareABatchWhenPassesCostMore()
    {
        // Nine lengths 121..129, two texts each: one-length batches would run nine passes of two.
        var lengths = Enumerable.Range(0, 18).Select(i => 121 + i / 2).ToList();
        var accelerator = LengthBuckets.Plan(lengths, 8, BucketCostModel.Accelerator(768));
        Assert.Equal(3, accelerator.Count);
        Assert.Contains(accelerator, b => b.Select(i => lengths[i]).Distinct().Count() > 1);
        // With passes free and references dear, the planner keeps lengths apart.
        var apart = LengthBuckets.Plan(lengths, 8, new BucketCostModel { PassOverheadRows = 0, ReferenceRow = 10 });
        Assert.All(apart, b => Assert.Single(b.Select(i => lengths[i]).Distinct()));
    }

    [Fact]
    public void ALengthCutAcrossBatchesCountsItsReferenceOnce()
    {
        // 20 texts of one length at batch 8: three passes, the reference recorded by the first and found by the others. Any
        // cut into three costs the same then (8 + 8 + 4 or 8 + 7 + 5: the model is indifferent), so the plan must cost that.
        var lengths = Enumerable.Repeat(64, 20).ToList();
        var cost = BucketCostModel.Cpu(768);
        var buckets = LengthBuckets.Plan(lengths, 8, cost);
        Assert.Equal(3, buckets.Count);
        Assert.All(buckets, b => Assert.InRange(b.Count, 1, 8));
        double planned = buckets.Select((b, k) => cost.Cost(b.Count, 64, newLengths: k == 0 ? 1 : 0)).Sum();
        double once = cost.Cost(8, 64, 1) + cost.Cost(8, 64, 0) + cost.Cost(4, 64, 0);
        Assert.Equal(once, planned, 6);
    }

    /// <summary>
    /// A model that packs its position-wise layers (<see cref="BucketCostModel.PackedTokens"/>) pays for padding only in
    /// attention, so the planner cuts fuller batches of a wide spread; with one length a batch both models cost the same.
    /// </summary>
    [Fact]
    public void PackedTokensMakeFullerBatches()
    {
        var lengths = Enumerable.Range(0, 33).Select(i => 16 + (i * 53) % 113).ToList(); // 16–128, every length once
        var padded = LengthBuckets.Plan(lengths, 8, BucketCostModel.Cpu(768));
        var packed = LengthBuckets.Plan(lengths, 8, BucketCostModel.Cpu(768) with { PackedTokens = true });
        Assert.Equal(5, packed.Count); // the fewest batches of 8 hold 33 texts
        Assert.True(padded.Count > packed.Count, $"padded {padded.Count} batches, packed {packed.Count}");
        var cost = BucketCostModel.Cpu(768) with { PackedTokens = true };
        Assert.Equal(BucketCostModel.Cpu(768).Cost(8, 64, 1), cost.Cost(8, 64, 1, lengths: 1, tokens: 8 * 64), 9);
        // Packed, a batch costs its own tokens, attention at its width and a small share of each padded position.
        Assert.Equal(100 + 0.05 * (2 * 64 - 100) + 2 * 64 * 64 / (6.0 * 768), cost.TextsWork(2, 64, lengths: 2, tokens: 100), 9);
        Assert.True(cost.TextsWork(2, 64, lengths: 2, tokens: 100) < BucketCostModel.Cpu(768).TextsWork(2, 64, lengths: 2, tokens: 100));
    }

    /// <summary>
    /// A batch the pass memory budget splits pays its pass overhead once per pass (<see cref="BucketCostModel.TextsPerPass"/>):
    /// four texts of 128 and four of 100, with passes of at most 4 at 128 tokens, go as two batches rather than one that
    /// would run as two passes of the wider width.
    /// </summary>
    [Fact]
    public void ABatchSplitIntoPassesPaysEachPass()
    {
        var lengths = Enumerable.Repeat(128, 4).Concat(Enumerable.Repeat(100, 4)).ToList();
        var packed = BucketCostModel.Cpu(768) with { PackedTokens = true };
        Assert.Single(LengthBuckets.Plan(lengths, 8, packed));
        var budgeted = packed with { TextsPerPass = width => width > 110 ? 4 : 8 };
        Assert.Equal(2, budgeted.Passes(8, 128));
        Assert.Equal(1, budgeted.Passes(4, 128));
        Assert.Equal(packed.Cost(8, 128, 2, 2, 912) + packed.PassOverheadRows * packed.RowWork(128), budgeted.Cost(8, 128, 2, 2, 912), 9);
        var plan = LengthBuckets.Plan(lengths, 8, budgeted);
        Assert.Equal(2, plan.Count);
        Assert.All(plan, b => Assert.Single(b.Select(i => lengths[i]).Distinct()));
    }
}

/// <summary>A fixed number of batches (the worker's planner: as few as the batch size allows), cut where cheapest.</summary>
public class LengthBucketsCountTests
{
    [Theory]
    [InlineData(5, 2)]
    [InlineData(24, 8)]
    [InlineData(33, 8)]
    [InlineData(1, 8)]
    public void AsFewBatchesAsTheBatchSizeAllows(int texts, int batchSize)
    {
        var lengths = Enumerable.Range(0, texts).Select(i => 115 + (i * 5) % 15).ToList();
        int fewest = (texts + batchSize - 1) / batchSize;
        var buckets = LengthBuckets.Plan(lengths, batchSize, BucketCostModel.Cpu(768), fewest);
        Assert.Equal(fewest, buckets.Count);
        Assert.All(buckets, b => Assert.InRange(b.Count, 1, batchSize));
        Assert.Equal(Enumerable.Range(0, texts), buckets.SelectMany(b => b).OrderBy(i => i));
    }

    [Fact]
    public void TheCutFallsBetweenFarApartLengths()
    {
        // 6 texts, 4 a batch, two batches: 3 long + 3 short cut between them rather than 4 + 2.
        var lengths = new[] { 128, 128, 128, 20, 20, 20 };
        var buckets = LengthBuckets.Plan(lengths, 4, BucketCostModel.Cpu(768), 2);
        Assert.Equal(new[] { 3, 3 }, buckets.Select(b => b.Count));
    }
}
