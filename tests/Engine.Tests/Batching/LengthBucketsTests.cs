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
        var lengths = Enumerable.Repeat(64, 20).ToList();
        var buckets = LengthBuckets.Plan(lengths, 8, BucketCostModel.Cpu(768));
        Assert.Equal(new[] { 8, 8, 4 }, buckets.Select(b => b.Count).OrderByDescending(c => c));
    }
}
