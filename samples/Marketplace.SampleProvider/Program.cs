using Marketplace.SampleProvider;

SampleProviderApp.Build(args).Run();
